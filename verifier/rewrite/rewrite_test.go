package rewrite

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
)

func TestParseKey(t *testing.T) {
	ok := map[string]Object{
		"/registry/secrets/default/db":        {Namespace: "default", Name: "db"},
		"/registry/example.com/widgets/w1":    {Name: "w1"},
		"/registry/secrets/kube-system/a.b-c": {Namespace: "kube-system", Name: "a.b-c"},
	}
	for key, want := range ok {
		prefix := "/registry/secrets/"
		if want.Namespace == "" {
			prefix = "/registry/example.com/widgets/"
		}
		got, err := ParseKey(prefix, key)
		if err != nil || got != want {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v", key, got, err, want)
		}
	}
	for _, key := range []string{"/registry/configmaps/default/x", "/registry/secrets/", "/registry/secrets/a/b/c", "/registry/secrets//x"} {
		if _, err := ParseKey("/registry/secrets/", key); err == nil {
			t.Errorf("ParseKey(%q) accepted", key)
		}
	}
}

// rewriteCase runs one Rewriter over objects "a" and "b" on a fake client
// whose updates of "a" answer with the given errors, in order, then
// succeed.
type rewriteCase struct {
	name        string
	updateErrs  []error
	deleteA     bool // "a" is deleted between the scan and the rewrite
	cancelAfter int  // cancel the context after this many waits (0: never)
	want        Result
	wantFatal   bool
	wantWaits   int
}

func TestRewriterConflictsGoneFailedCancel(t *testing.T) {
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	conflict := apierrors.NewConflict(gvr.GroupResource(), "a", errors.New("the object has been modified"))
	cases := []rewriteCase{
		{name: "clean", want: Result{Rewritten: 2}},
		{name: "conflicts retried with back-off", updateErrs: []error{conflict, conflict, conflict}, want: Result{Rewritten: 2}, wantWaits: 3},
		{name: "conflicts beyond the bound fail", updateErrs: []error{conflict, conflict, conflict, conflict}, want: Result{Rewritten: 1, Failed: 1}, wantWaits: 3},
		{name: "gone", deleteA: true, want: Result{Rewritten: 1, Gone: 1}},
		{name: "other error fails at once", updateErrs: []error{apierrors.NewForbidden(gvr.GroupResource(), "a", errors.New("no"))}, want: Result{Rewritten: 1, Failed: 1}},
		{name: "cancelled during the back-off", updateErrs: []error{conflict, conflict, conflict}, cancelAfter: 1, wantFatal: true, wantWaits: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := []runtime.Object{}
			for _, n := range []string{"a", "b"} {
				if n == "a" && tc.deleteA {
					continue
				}
				u := &unstructured.Unstructured{}
				u.SetAPIVersion("v1")
				u.SetKind("Secret")
				u.SetNamespace("default")
				u.SetName(n)
				objs = append(objs, u)
			}
			dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "SecretList"}, objs...)
			var mu sync.Mutex
			errs := append([]error(nil), tc.updateErrs...)
			dyn.PrependReactor("update", "secrets", func(a clienttesting.Action) (bool, runtime.Object, error) {
				mu.Lock()
				defer mu.Unlock()
				if a.(clienttesting.UpdateAction).GetObject().(*unstructured.Unstructured).GetName() == "a" && len(errs) > 0 {
					err := errs[0]
					errs = errs[1:]
					return true, nil, err
				}
				return false, nil, nil
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var waits []time.Duration
			r := &Rewriter{Client: dyn, Resource: gvr, Workers: 1, MaxConflicts: 3,
				Sleep: func(ctx context.Context, d time.Duration) error {
					mu.Lock()
					waits = append(waits, d)
					n := len(waits)
					mu.Unlock()
					if tc.cancelAfter > 0 && n >= tc.cancelAfter {
						cancel()
						return ctx.Err()
					}
					return nil
				}}
			res, err := r.Run(ctx, []Object{{Namespace: "default", Name: "a"}, {Namespace: "default", Name: "b"}})
			if (err != nil) != tc.wantFatal {
				t.Fatalf("Run error %v, want fatal=%v", err, tc.wantFatal)
			}
			if !tc.wantFatal && (res.Rewritten != tc.want.Rewritten || res.Gone != tc.want.Gone || res.Failed != tc.want.Failed) {
				t.Fatalf("Result %+v, want %+v", res, tc.want)
			}
			if len(waits) != tc.wantWaits {
				t.Fatalf("waited %d times (%v), want %d", len(waits), waits, tc.wantWaits)
			}
			for i := 1; i < len(waits); i++ {
				if waits[i] <= waits[i-1]/2 || waits[i] < 100*time.Millisecond {
					t.Fatalf("waits %v do not back off", waits)
				}
			}
		})
	}
}

func TestConflictBackoffGrowsAndIsBounded(t *testing.T) {
	prev := time.Duration(0)
	for n := 1; n <= 12; n++ {
		d := ConflictBackoff(n)
		lo := min(100*time.Millisecond<<(n-1), 5*time.Second)
		if d < lo || d > lo+lo/4 {
			t.Fatalf("ConflictBackoff(%d) = %s, want between %s and %s", n, d, lo, lo+lo/4)
		}
		if n <= 6 && d <= prev {
			t.Fatalf("ConflictBackoff(%d) = %s does not grow from %s", n, d, prev)
		}
		prev = d
	}
}
