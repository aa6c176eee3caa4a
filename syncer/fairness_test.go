package syncer

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/vault"
)

func TestNamespaceSlots(t *testing.T) {
	for _, tc := range []struct{ workers, want int }{
		{0, 1}, {1, 1}, {3, 1}, {4, 1}, {7, 1}, {8, 2}, {16, 4}, {17, 4}, {64, 16},
	} {
		if got := NamespaceSlots(tc.workers); got != tc.want {
			t.Errorf("NamespaceSlots(%d) = %d, want %d", tc.workers, got, tc.want)
		}
	}
}

func TestNamespaceBurst(t *testing.T) {
	for _, tc := range []struct{ workers, want int }{{0, 1}, {1, 1}, {2, 1}, {8, 7}, {16, 15}} {
		if got := NamespaceBurst(tc.workers); got != tc.want {
			t.Errorf("NamespaceBurst(%d) = %d, want %d", tc.workers, got, tc.want)
		}
	}
}

func TestSlotLimit(t *testing.T) {
	cases := []struct {
		name      string
		starts    []time.Time
		slowUntil time.Time
		want      int
	}{
		{"nothing in flight, never slow: burst", nil, time.Time{}, 7},
		{"quick passes in flight: burst", []time.Time{t0.Add(-500 * time.Millisecond), t0}, time.Time{}, 7},
		{"a pass running past a second: slow", []time.Time{t0.Add(-time.Second), t0}, time.Time{}, 2},
		{"a slow pass ended recently: still slow", nil, t0.Add(time.Second), 2},
		{"the slow memory has passed: burst again", nil, t0, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := SlotLimit(2, 7, tc.starts, tc.slowUntil, t0); got != tc.want {
				t.Fatalf("SlotLimit = %d, want %d", got, tc.want)
			}
		})
	}
}

// A quick namespace takes every slot but one; once one of its passes runs
// past a second (a Vault that hangs), it is held to its fair share until a
// minute after its last slow pass ended.
func TestBurstLimiter(t *testing.T) {
	now := t0
	l := newBurstLimiter(2, 7, func() time.Time { return now })
	var held []func()
	for i := range 7 {
		release, ok := l.tryAcquire("a")
		if !ok {
			t.Fatalf("quick namespace refused its pass %d of 7", i+1)
		}
		held = append(held, release)
	}
	if _, ok := l.tryAcquire("a"); ok {
		t.Fatal("an 8th pass of one namespace was let in: no worker left to the others")
	}
	if _, ok := l.tryAcquire("b"); !ok {
		t.Fatal("another namespace refused while a quick one holds 7")
	}
	now = now.Add(2 * time.Second) // the 7 hang
	for _, r := range held[2:] {
		r()
	}
	if l.inFlight("a") != 2 {
		t.Fatalf("%d in flight, want 2", l.inFlight("a"))
	}
	if _, ok := l.tryAcquire("a"); ok {
		t.Fatal("a slow namespace got a third slot")
	}
	held[0]()
	held[1]()
	now = now.Add(30 * time.Second)
	r1, ok1 := l.tryAcquire("a")
	r2, ok2 := l.tryAcquire("a")
	if _, ok3 := l.tryAcquire("a"); !ok1 || !ok2 || ok3 {
		t.Fatalf("within a minute of its slow passes: got %v %v %v, want two slots and no third", ok1, ok2, ok3)
	}
	r1()
	r2()
	now = now.Add(2 * time.Minute)
	for i := range 7 {
		if _, ok := l.tryAcquire("a"); !ok {
			t.Fatalf("a minute after its last slow pass, pass %d of 7 refused", i+1)
		}
	}
}

func TestThrottleDelay(t *testing.T) {
	for _, tc := range []struct {
		jitter float64
		want   time.Duration
	}{{0, 2 * time.Second}, {0.5, 3 * time.Second}, {0.25, 2500 * time.Millisecond}} {
		if got := ThrottleDelay(tc.jitter); got != tc.want {
			t.Errorf("ThrottleDelay(%v) = %s, want %s", tc.jitter, got, tc.want)
		}
	}
	if got := ThrottleDelay(0.9999); got >= 4*time.Second {
		t.Errorf("ThrottleDelay(0.9999) = %s, want under 4s", got)
	}
}

// TestNamespaceLimiter: each row is a sequence of steps on one limiter.
// "+ns" acquires a slot of ns and expects ok; "-ns" expects a refusal;
// "rN" releases the N-th slot acquired (counting from 0).
func TestNamespaceLimiter(t *testing.T) {
	cases := []struct {
		name  string
		limit int
		steps []string
		// inFlight is each namespace's count at the end.
		inFlight map[string]int
	}{
		{"one slot: a second pass of the namespace is refused", 1, []string{"+a", "-a"}, map[string]int{"a": 1}},
		{"a namespace at its limit leaves others free", 1, []string{"+a", "-a", "+b", "-b", "+c"}, map[string]int{"a": 1, "b": 1, "c": 1}},
		{"two slots", 2, []string{"+a", "+a", "-a", "+b"}, map[string]int{"a": 2, "b": 1}},
		{"a released slot is free again", 1, []string{"+a", "-a", "r0", "+a", "-a"}, map[string]int{"a": 1}},
		{"releasing twice frees one slot, not two", 2, []string{"+a", "+a", "r0", "r0", "+a", "-a"}, map[string]int{"a": 2}},
		{"all released: nothing in flight", 2, []string{"+a", "+b", "r0", "r1"}, map[string]int{"a": 0, "b": 0}},
		{"no limit", 0, []string{"+a", "+a", "+a", "+a"}, map[string]int{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newNamespaceLimiter(tc.limit)
			var releases []func()
			for i, step := range tc.steps {
				switch step[0] {
				case '+', '-':
					release, ok := l.tryAcquire(step[1:])
					if want := step[0] == '+'; ok != want {
						t.Fatalf("step %d %q: ok = %v", i, step, ok)
					}
					if ok {
						releases = append(releases, release)
					}
				case 'r':
					releases[int(step[1]-'0')]()
				}
			}
			for ns, want := range tc.inFlight {
				if got := l.inFlight(ns); got != want {
					t.Errorf("inFlight(%q) = %d, want %d", ns, got, want)
				}
			}
			if tc.limit > 0 {
				for ns, n := range l.inUse {
					if len(n) == 0 {
						t.Errorf("namespace %q kept with %d in flight", ns, len(n))
					}
				}
			}
		})
	}
}

// TestNamespaceLimiterConcurrent: however many passes of one namespace
// race for its slots, no more than the limit hold one at once.
func TestNamespaceLimiterConcurrent(t *testing.T) {
	l := newNamespaceLimiter(2)
	var cur, peak, got atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				release, ok := l.tryAcquire("a")
				if !ok {
					continue
				}
				got.Add(1)
				n := cur.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				cur.Add(-1)
				release()
			}
		}()
	}
	wg.Wait()
	if peak.Load() > 2 || got.Load() == 0 {
		t.Fatalf("peak %d holders of 2 slots, %d acquisitions", peak.Load(), got.Load())
	}
	if l.inFlight("a") != 0 {
		t.Fatalf("%d slots still taken after every release", l.inFlight("a"))
	}
}

func TestPlanCallsVault(t *testing.T) {
	for _, tc := range []struct {
		plan Plan
		want bool
	}{
		{Plan{Action: ActWait}, false},
		{Plan{Action: ActWriteMetadata}, false},
		{Plan{Action: ActInvalid}, false},
		{Plan{Action: ActConflict}, false},
		{Plan{Action: ActWait, AdoptHMAC: true, MarkApplied: true}, false},
		{Plan{Action: ActFetch}, true},
		{Plan{Action: ActRenew}, true},
		{Plan{Action: ActWait, JournalPlan: JournalPlan{Promote: true}}, true},
		{Plan{Action: ActWait, JournalPlan: JournalPlan{DropPending: true}}, true},
		{Plan{Action: ActWait, JournalPlan: JournalPlan{ReleaseStale: true}}, true},
		{Plan{Action: ActInvalid, JournalPlan: JournalPlan{Previous: PreviousRevoke}}, true},
		{Plan{Action: ActWait, JournalPlan: JournalPlan{Previous: PreviousForget}}, false},
		{Plan{Action: ActWait, Sources: []SourcePlan{{}, {JournalPlan: JournalPlan{Promote: true}}}}, true},
		{Plan{Action: ActWait, Sources: []SourcePlan{{JournalPlan: JournalPlan{ReleaseStale: true}}}}, true},
		{Plan{Action: ActWait, Sources: []SourcePlan{{JournalPlan: JournalPlan{Previous: PreviousRevoke}}}}, true},
		{Plan{Action: ActWait, Sources: []SourcePlan{{JournalPlan: JournalPlan{Previous: PreviousWait}}}}, false},
	} {
		if got := tc.plan.callsVault(); got != tc.want {
			t.Errorf("%+v: callsVault = %v, want %v", tc.plan, got, tc.want)
		}
	}
}

// approleVault is a real Vault (built by make tools) whose AppRole role
// "app" may read secret/data/app, with a file audit log: the tests count
// Vault's own record of the requests a pass made.
type approleVault struct {
	base             *api.Client
	audit            string
	roleID, secretID string
}

func startApproleVault(t *testing.T) *approleVault {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the Vault server of make tools")
	}
	v := harness.StartVault(t)
	v.EnableAuth("approle", "approle")
	v.Policy("app-read", `path "secret/data/app" { capabilities = ["read"] }`)
	v.Write("auth/approle/role/app", map[string]any{"token_policies": "app-read"})
	v.Write("secret/data/app", map[string]any{"data": map[string]any{"password": "p"}})
	a := &approleVault{audit: v.EnableFileAudit()}
	a.roleID = v.Read("auth/approle/role/app/role-id").Data["role_id"].(string)
	a.secretID = v.Write("auth/approle/role/app/secret-id", nil).Data["secret_id"].(string)
	base, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a.base = base
	return a
}

// creds is the AppRole Secret that appRoleVaultSecret names, in ns.
func (a *approleVault) creds(ns string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "approle"},
		Data: map[string][]byte{"role-id": []byte(a.roleID), "secret-id": []byte(a.secretID)}}
}

// requests counts the logins and KV reads Vault answered: a pass that
// reaches Vault at all logs in first (no token is cached in these tests).
func (a *approleVault) requests(t *testing.T) int {
	t.Helper()
	return harness.AuditCount(t, a.audit, "auth/approle/login") + harness.AuditCount(t, a.audit, "secret/data/app")
}

// fairnessReconciler is a Reconciler of 4 workers (one slot per namespace)
// over a fake API server holding objs, reading Vault through base (nil
// for a test that calls no Vault).
func fairnessReconciler(t *testing.T, now time.Time, base *api.Client, objs ...client.Object) (*Reconciler, *clocktesting.FakeClock, *events.FakeRecorder) {
	t.Helper()
	return fairnessReconcilerWith(t, now, interceptor.Funcs{}, base, objs...)
}

// fairnessReconcilerWith is fairnessReconciler whose API client calls
// funcs.
func fairnessReconcilerWith(t *testing.T, now time.Time, funcs interceptor.Funcs, base *api.Client, objs ...client.Object) (*Reconciler, *clocktesting.FakeClock, *events.FakeRecorder) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&v1alpha1.VaultSecret{}).WithInterceptorFuncs(funcs).Build()
	clk := clocktesting.NewFakeClock(now)
	rec := events.NewFakeRecorder(10)
	r := &Reconciler{Client: c, APIReader: c, Clock: clk, Recorder: rec, HMACKey: []byte("k"), Workers: 4,
		Tenants: &Tenants{Base: base, Clock: clk}, VaultTimeout: 5 * time.Second, FinalizerTimeout: time.Minute}
	r.parts()
	return r, clk, rec
}

func appRoleVaultSecret(name string) *v1alpha1.VaultSecret {
	return &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, UID: types.UID("uid-" + name), Generation: 1},
		Spec: v1alpha1.VaultSecretSpec{Auth: v1alpha1.Auth{AppRole: &v1alpha1.AppRoleAuth{SecretRef: "approle"}},
			Source: v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app"}}}}
}

// TestThrottledPassCallsNoVault: while its namespace's one slot is taken
// (a pass hanging on Vault), a VaultSecret due for a read is requeued
// after ThrottleDelay without a Vault request, and another namespace is
// not held up; once the slot is free the pass reaches Vault.
func TestThrottledPassCallsNoVault(t *testing.T) {
	v := startApproleVault(t)
	other := appRoleVaultSecret("kv")
	other.Namespace = "other"
	r, clk, _ := fairnessReconciler(t, time.Now(), v.base, appRoleVaultSecret("kv"), v.creds("app"), other, v.creds("other"))
	ctx := context.Background()

	hanging, ok := r.slots.tryAcquire("app")
	if !ok {
		t.Fatal("no slot for the hanging pass")
	}
	clk.Step(2 * time.Second) // the pass hangs: its namespace is slow
	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "app", Name: "kv"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := v.requests(t); res.RequeueAfter < throttleRetry || res.RequeueAfter >= 2*throttleRetry || n != 0 {
		t.Fatalf("throttled pass: %+v and %d Vault requests; want a requeue in [2s, 4s) and none", res, n)
	}
	var vs v1alpha1.VaultSecret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: "app", Name: "kv"}, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs.Status.Conditions) != 0 {
		t.Fatalf("a throttled pass wrote status: %+v", vs.Status)
	}

	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "other", Name: "kv"}}); err != nil {
		t.Fatal(err)
	}
	if v.requests(t) == 0 {
		t.Fatal("another namespace's pass did not reach Vault while app's slot was taken")
	}

	before := v.requests(t)
	hanging()
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "app", Name: "kv"}}); err != nil {
		t.Fatal(err)
	}
	if v.requests(t) == before {
		t.Fatal("with its slot free, the pass did not reach Vault")
	}
	if r.slots.inFlight("app") != 0 {
		t.Fatalf("the pass kept its slot: %d in flight", r.slots.inFlight("app"))
	}
}

// TestThrottledDeletion: a deletion whose namespace has no free slot waits
// like any pass until --finalizer-timeout, then lets the VaultSecret go
// with LeaseNotRevoked, without waiting for a slot or calling Vault.
func TestThrottledDeletion(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	vs := appRoleVaultSecret("db")
	vs.Spec.Source = v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "database", Path: "creds/app"}}
	vs.Finalizers = []string{Finalizer}
	vs.DeletionTimestamp = &metav1.Time{Time: now}
	vs.Status.Lease = &v1alpha1.Lease{ID: "database/creds/app/L1", IssuedAt: metav1.NewTime(now), ExpiresAt: metav1.NewTime(now.Add(time.Hour))}
	v := startApproleVault(t)
	r, clk, rec := fairnessReconciler(t, now, v.base, vs, v.creds("app"))
	ctx := context.Background()
	key := client.ObjectKey{Namespace: "app", Name: "db"}
	if _, ok := r.slots.tryAcquire("app"); !ok {
		t.Fatal("no slot for the hanging pass")
	}
	clk.Step(2 * time.Second) // the pass hangs: its namespace is slow

	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key})
	if err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.VaultSecret
	if err := r.Client.Get(ctx, key, &got); err != nil || res.RequeueAfter < throttleRetry {
		t.Fatalf("before the timeout: %+v, %v; want the VaultSecret kept and a requeue", res, err)
	}

	clk.Step(time.Minute)
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if err := r.Client.Get(ctx, key, &got); err == nil && len(got.Finalizers) > 0 {
		t.Fatalf("past the timeout the finalizer stays: %v", got.Finalizers)
	}
	if n := v.requests(t); n != 0 {
		t.Fatalf("%d Vault requests without a slot", n)
	}
	select {
	case e := <-rec.Events:
		if !strings.Contains(e, "LeaseNotRevoked") {
			t.Fatalf("event %q, want LeaseNotRevoked", e)
		}
	default:
		t.Fatal("no LeaseNotRevoked event")
	}
}

// A pass that found no free slot is parked once, however often it comes
// back, and the slots given back wake the parked passes in order, one
// each; a slot given back twice wakes one pass only.
func TestLimiterWakesParkedPasses(t *testing.T) {
	l := newBurstLimiter(1, 1, func() time.Time { return t0 })
	var woken []client.ObjectKey
	l.wake = func(k client.ObjectKey) { woken = append(woken, k) }
	first, second := client.ObjectKey{Namespace: "a", Name: "first"}, client.ObjectKey{Namespace: "a", Name: "second"}
	other := client.ObjectKey{Namespace: "b", Name: "other"}

	held, ok := l.tryAcquire("a")
	if !ok {
		t.Fatal("an idle namespace refused a pass")
	}
	for _, k := range []client.ObjectKey{first, first, second} {
		if _, ok := l.tryAcquireOrPark(k); ok {
			t.Fatalf("%s got a slot namespace a does not have", k)
		}
	}
	releaseOther, ok := l.tryAcquireOrPark(other)
	if !ok {
		t.Fatal("namespace b refused for namespace a's busy slot")
	}
	releaseOther()
	if len(woken) != 0 {
		t.Fatalf("namespace b's slot woke %v: it wakes only passes of b", woken)
	}
	held()
	held()
	if want := []client.ObjectKey{first}; !slices.Equal(woken, want) {
		t.Fatalf("woken %v after one slot given back (twice), want %v", woken, want)
	}
	again, ok := l.tryAcquireOrPark(first)
	if !ok {
		t.Fatal("the woken pass found no slot")
	}
	again()
	if want := []client.ObjectKey{first, second}; !slices.Equal(woken, want) {
		t.Fatalf("woken %v, want %v", woken, want)
	}
	last, _ := l.tryAcquireOrPark(second)
	last()
	if len(woken) != 2 || len(l.parked) != 0 || len(l.isParked) != 0 {
		t.Fatalf("woken %v, parked %v: nothing is left parked once every pass was served", woken, l.parked)
	}
}

// TestParkedPassServedElsewhereTakesNoWake: a parked pass that gets a
// slot, or needs none, by another way than its wake (its requeue, an
// event) leaves the line, so the next slot given back wakes a pass still
// waiting. Before, the stale entry took that wake, and the pass still
// waiting sat until its requeue, seconds later, while a slot was free.
func TestParkedPassServedElsewhereTakesNoWake(t *testing.T) {
	a, b := client.ObjectKey{Namespace: "ns", Name: "a"}, client.ObjectKey{Namespace: "ns", Name: "b"}
	setup := func(t *testing.T) (*namespaceLimiter, *[]client.ObjectKey, func()) {
		l := newNamespaceLimiter(1)
		woken := &[]client.ObjectKey{}
		l.wake = func(k client.ObjectKey) { *woken = append(*woken, k) }
		hold, ok := l.tryAcquire("ns")
		if !ok {
			t.Fatal("the first pass got no slot")
		}
		for _, k := range []client.ObjectKey{a, b} {
			if _, ok := l.tryAcquireOrPark(k); ok {
				t.Fatalf("%s got a slot the namespace does not have", k.Name)
			}
		}
		return l, woken, hold
	}
	t.Run("served by its requeue", func(t *testing.T) {
		l, woken, hold := setup(t)
		hold() // wakes a; before a's pass runs, b's requeue takes the slot
		bRelease, ok := l.tryAcquireOrPark(b)
		if !ok {
			t.Fatal("b found no free slot")
		}
		if _, ok := l.tryAcquireOrPark(a); ok {
			t.Fatal("a got the slot b holds")
		}
		bRelease() // must wake a, parked again, not b
		if want := []client.ObjectKey{a, a}; !slices.Equal(*woken, want) {
			t.Fatalf("woken %v, want %v", *woken, want)
		}
	})
	t.Run("needing no slot by its turn", func(t *testing.T) {
		l, woken, hold := setup(t)
		l.forget(a) // a's pass ran on an event and found nothing due
		hold()
		if want := []client.ObjectKey{b}; !slices.Equal(*woken, want) {
			t.Fatalf("woken %v, want %v", *woken, want)
		}
	})
}

// TestSlotGivenBackBeforeTheWrites: a pass that issues nothing (kv) gives
// its namespace's slot back once it has read Vault, so the slots bound
// the passes calling Vault and not those waiting for the API server's
// answers to the Secret and status writes. The pass reads a real Vault
// (AppRole login, KV read); only the API server is the fake client, whose
// interceptors look at the slots at the moment of each write.
func TestSlotGivenBackBeforeTheWrites(t *testing.T) {
	v := startApproleVault(t)
	var r *Reconciler
	held := map[string]int{}
	funcs := interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				held["Secret create"] = r.slots.inFlight("app")
			}
			return c.Create(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			held["status write"] = r.slots.inFlight("app")
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	}
	r, _, _ = fairnessReconcilerWith(t, time.Now(), funcs, v.base, appRoleVaultSecret("kv"), v.creds("app"))
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "app", Name: "kv"}}); err != nil {
		t.Fatal(err)
	}
	var vs v1alpha1.VaultSecret
	if err := r.Client.Get(context.Background(), client.ObjectKey{Namespace: "app", Name: "kv"}, &vs); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(vs.Status.Conditions, "Ready") {
		t.Fatalf("the pass did not sync: %+v", vs.Status.Conditions)
	}
	for _, what := range []string{"Secret create", "status write"} {
		n, ok := held[what]
		if !ok {
			t.Fatalf("no %s seen", what)
		}
		if n != 0 {
			t.Fatalf("%d of the namespace's slots held during the %s", n, what)
		}
	}
}
