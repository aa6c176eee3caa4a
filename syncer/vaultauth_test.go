package syncer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func inlineVS() *v1alpha1.VaultSecret {
	return &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "app"},
		Spec: v1alpha1.VaultSecretSpec{Auth: v1alpha1.Auth{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app"}},
			Source: v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app"}}}}
}

func k8sAuth(role string) *v1alpha1.VaultAuth {
	return &v1alpha1.VaultAuth{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "app"},
		Spec: v1alpha1.VaultAuthSpec{Kubernetes: &v1alpha1.KubernetesAuth{Role: role, ServiceAccountName: "app"}}}
}

// TestSyncHash: what moves the hash Decide compares (and so re-syncs),
// and what must not.
func TestSyncHash(t *testing.T) {
	inline := inlineVS()
	if got, want := syncHash(inline, nil), sourceHash(inline); got != want {
		t.Fatalf("inline auth, no annotation: hash %s, want the spec's %s (an upgrade must re-sync nothing)", got, want)
	}
	forced := inlineVS()
	forced.Annotations = map[string]string{ForceSyncAnnotation: "1"}
	h1 := syncHash(forced, nil)
	if h1 == sourceHash(inline) {
		t.Fatal("a force-sync value left the hash unchanged")
	}
	if syncHash(forced, nil) != h1 {
		t.Fatal("the same force-sync value moved the hash (it must sync once per value)")
	}
	forced.Annotations[ForceSyncAnnotation] = "2"
	if syncHash(forced, nil) == h1 {
		t.Fatal("a new force-sync value left the hash unchanged")
	}
	forced.Annotations[ForceSyncAnnotation] = ""
	if syncHash(forced, nil) == sourceHash(inline) {
		t.Fatal("an empty force-sync value is a value too")
	}

	ref := inlineVS()
	ref.Spec.Auth = v1alpha1.Auth{}
	ref.Spec.AuthRef = &v1alpha1.AuthRef{Name: "app"}
	a, b := syncHash(ref, k8sAuth("app")), syncHash(ref, k8sAuth("other"))
	if a == b {
		t.Fatal("an edited VaultAuth left its VaultSecrets' hash unchanged: they would not re-sync")
	}
	if syncHash(ref, k8sAuth("app")) != a {
		t.Fatal("the hash of an unchanged VaultAuth moved")
	}
	if syncHash(ref, nil) == a {
		t.Fatal("a missing VaultAuth hashes like an existing one")
	}
	other := ref.DeepCopy()
	other.Spec.AuthRef.Name = "b"
	if syncHash(other, k8sAuth("app")) == a {
		t.Fatal("another authRef name hashes alike")
	}
}

func TestInvalidReason(t *testing.T) {
	if got := invalidReason(&authNotFoundError{namespace: "app", name: "x"}); got != ReasonAuthNotFound {
		t.Fatalf("missing VaultAuth: reason %s, want %s", got, ReasonAuthNotFound)
	}
	if got := invalidReason(context.Canceled); got != ReasonInvalid {
		t.Fatalf("other problem: reason %s, want %s", got, ReasonInvalid)
	}
	msg := (&authNotFoundError{namespace: "app", name: "x"}).Error()
	if !strings.Contains(msg, "spec.authRef.name") || !strings.Contains(msg, `"x"`) {
		t.Fatalf("message %q must name the field and the VaultAuth", msg)
	}
}

// TestVaultAuthCheck: no token is minted for an audience outside the
// allowlist, nor for the controller's own service account, through a
// VaultAuth either; the error names the VaultAuth's field.
func TestVaultAuthCheck(t *testing.T) {
	s := &sharedAuths{Tenants: &Tenants{Audiences: []string{"vault"}}, ControllerNamespace: "vaultkms-system", ControllerServiceAccount: "vaultkms"}
	cases := []struct {
		name string
		va   *v1alpha1.VaultAuth
		want string // "" for accepted
	}{
		{"kubernetes, default audience", k8sAuth("app"), ""},
		{"kubernetes, allowed audience", func() *v1alpha1.VaultAuth {
			va := k8sAuth("app")
			va.Spec.Kubernetes.Audiences = []string{"vault"}
			return va
		}(), ""},
		{"jwt, the API server's audience", &v1alpha1.VaultAuth{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "app"},
			Spec: v1alpha1.VaultAuthSpec{JWT: &v1alpha1.JWTAuth{Role: "r", ServiceAccountName: "app", Audiences: []string{"vault", "https://kubernetes.default.svc"}}}},
			`VaultAuth j: spec.jwt.audiences[1]: "https://kubernetes.default.svc" is not an audience`},
		{"kubernetes, the controller's own service account", &v1alpha1.VaultAuth{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "vaultkms-system"},
			Spec: v1alpha1.VaultAuthSpec{Kubernetes: &v1alpha1.KubernetesAuth{Role: "r", ServiceAccountName: "vaultkms"}}},
			`VaultAuth c: spec.kubernetes.serviceAccountName: "vaultkms" is the controller's own service account`},
		{"appRole", &v1alpha1.VaultAuth{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "app"},
			Spec: v1alpha1.VaultAuthSpec{AppRole: &v1alpha1.AppRoleAuth{SecretRef: "creds"}}}, ""},
		{"no method", &v1alpha1.VaultAuth{ObjectMeta: metav1.ObjectMeta{Name: "n", Namespace: "app"}}, "spec needs exactly one of kubernetes, appRole or jwt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.check(c.va)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestVaultAuthKey: an edited VaultAuth logs in afresh, its old token is
// dropped, and other VaultAuths' and inline tokens stay.
func TestVaultAuthKey(t *testing.T) {
	va := k8sAuth("app")
	k1 := vaultAuthKey(va)
	if k1 != vaultAuthKey(k8sAuth("app")) {
		t.Fatal("the key of an unchanged VaultAuth moved: each pass would log in")
	}
	k2 := vaultAuthKey(k8sAuth("other"))
	if k1 == k2 {
		t.Fatal("an edited VaultAuth keeps the old spec's token")
	}
	inline := tenantKeyFor(inlineVS())
	if k1 == inline {
		t.Fatal("a VaultAuth shares a key with an inline identity")
	}
	otherAuth := k8sAuth("app")
	otherAuth.Name = "b"
	k3 := vaultAuthKey(otherAuth)
	tn := &Tenants{tokens: map[tenantKey]*TenantToken{k1: {}, k2: {}, k3: {}, inline: {}}}
	s := &sharedAuths{Tenants: tn}
	s.prune("app", "app", k2)
	if tn.Cached(k1) != nil || tn.Cached(k2) == nil || tn.Cached(k3) == nil || tn.Cached(inline) == nil {
		t.Fatalf("after prune keeping the current spec: %v", tn.tokens)
	}
	s.prune("app", "app", tenantKey{})
	if tn.Cached(k2) != nil || tn.Cached(k3) == nil || tn.Cached(inline) == nil {
		t.Fatalf("after prune of a deleted VaultAuth: %v", tn.tokens)
	}
}

// TestAuthRefChanges: the VaultAuth status controller hears of the
// VaultSecrets that change its count, and of nothing else (status writes
// are most VaultSecret events).
func TestAuthRefChanges(t *testing.T) {
	withRef := func(name string) *v1alpha1.VaultSecret {
		vs := inlineVS()
		if name != "" {
			vs.Spec.Auth, vs.Spec.AuthRef = v1alpha1.Auth{}, &v1alpha1.AuthRef{Name: name}
		}
		return vs
	}
	h := authRefChanges()
	// queued is what the queue holds once countSettle has passed (and
	// nothing before it): want keys are waited for, then a moment more
	// for any key too many.
	queued := func(t *testing.T, f func(q workqueue.TypedRateLimitingInterface[reconcile.Request]), want int) []string {
		clk := testingclock.NewFakeClock(t0)
		q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request](),
			workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Clock: clk})
		defer q.ShutDown()
		f(q)
		// The delaying queue moves what is due from its own goroutine.
		clk.Step(countSettle - time.Millisecond)
		time.Sleep(20 * time.Millisecond)
		if q.Len() != 0 {
			t.Fatalf("%d queued before the count settled", q.Len())
		}
		clk.Step(time.Millisecond)
		for deadline := time.Now().Add(5 * time.Second); q.Len() < want && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		var out []string
		for q.Len() > 0 {
			r, _ := q.Get()
			out = append(out, r.String())
			q.Done(r)
		}
		slices.Sort(out)
		return out
	}
	ctx := context.Background()
	cases := []struct {
		name string
		f    func(q workqueue.TypedRateLimitingInterface[reconcile.Request])
		want []string
	}{
		{"create with authRef", func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Create(ctx, event.CreateEvent{Object: withRef("a")}, q)
		}, []string{"app/a"}},
		{"create inline", func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Create(ctx, event.CreateEvent{Object: withRef("")}, q)
		}, nil},
		{"status write", func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			n := withRef("a")
			n.Status.LastSyncTime = &metav1.Time{Time: time.Now()}
			h.Update(ctx, event.UpdateEvent{ObjectOld: withRef("a"), ObjectNew: n}, q)
		}, nil},
		{"authRef renamed", func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Update(ctx, event.UpdateEvent{ObjectOld: withRef("a"), ObjectNew: withRef("b")}, q)
		}, []string{"app/a", "app/b"}},
		{"delete", func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Delete(ctx, event.DeleteEvent{Object: withRef("a")}, q)
		}, []string{"app/a"}},
		{"a thousand creates, one count", func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			for i := 0; i < 1000; i++ {
				vs := withRef("a")
				vs.Name = fmt.Sprintf("vs-%d", i)
				h.Create(ctx, event.CreateEvent{Object: vs}, q)
			}
		}, []string{"app/a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := queued(t, c.f, len(c.want))
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("queued %v, want %v", got, c.want)
			}
		})
	}
}

// TestRenewAt: the status controller looks again just past the point
// where Tenants renews, so an unused VaultAuth's token stays renewed.
func TestRenewAt(t *testing.T) {
	tok := &TenantToken{Expires: t0.Add(30 * time.Minute), ttl: 30 * time.Minute}
	if got, want := renewAt(t0, tok).RequeueAfter, 20*time.Minute+time.Second; got != want {
		t.Fatalf("requeue after %s, want %s", got, want)
	}
	if got := renewAt(t0.Add(25*time.Minute), tok).RequeueAfter; got != time.Second {
		t.Fatalf("past the renewal point: requeue after %s, want 1s", got)
	}
	if got := renewAt(t0, &TenantToken{}).RequeueAfter; got != 0 {
		t.Fatalf("a token that does not expire: requeue after %s, want none", got)
	}
}
