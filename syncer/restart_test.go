package syncer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func TestRestartWait(t *testing.T) {
	cases := []struct {
		name      string
		last      time.Time
		now       time.Time
		min, want time.Duration
	}{
		{"never restarted", time.Time{}, t0, 30 * time.Second, 0},
		{"restarted 10s ago", t0, t0.Add(10 * time.Second), 30 * time.Second, 20 * time.Second},
		{"restarted exactly the interval ago", t0, t0.Add(30 * time.Second), 30 * time.Second, 0},
		{"restarted long ago", t0, t0.Add(time.Hour), 30 * time.Second, 0},
		{"no debounce", t0, t0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := RestartWait(tc.now, tc.last, tc.min); got != tc.want {
				t.Fatalf("RestartWait = %s, want %s", got, tc.want)
			}
		})
	}
}

// restartedAt is the restart annotation of a Deployment's pod template.
func restartedAt(t *testing.T, c client.Client, name string) string {
	t.Helper()
	var d appsv1.Deployment
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "team-a", Name: name}, &d); err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Annotations[RestartedAtAnnotation]
}

// waitFor polls cond for up to 10 s: the restarter works on its own
// goroutine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// Three VaultSecrets whose data changes within the interval restart a
// Deployment they share twice (at once, then once at the interval's end),
// a selector picks Deployments by label, and a missing target is counted
// as a failed restart by namespace and kind.
func TestRestarterDebouncesAndSelects(t *testing.T) {
	scheme := restartScheme(t)
	dep := func(name string, labels map[string]string) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, Labels: labels}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(dep("web", nil), dep("api", map[string]string{"tier": "back"}),
		dep("worker", map[string]string{"tier": "back"}), dep("ui", map[string]string{"tier": "front"})).Build()
	clk := clocktesting.NewFakeClock(t0)
	m := NewMetrics(prometheus.NewRegistry())
	r := &restarter{Client: c, APIReader: c, Status: &statusRecorder{}, Metrics: m, Clock: clk, MinInterval: 30 * time.Second}
	ctx := runRestarter(t, r)

	vs := func(name string, targets ...v1alpha1.RolloutRestartTarget) *v1alpha1.VaultSecret {
		return &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name},
			Spec: v1alpha1.VaultSecretSpec{RolloutRestartTargets: targets}}
	}
	web := v1alpha1.RolloutRestartTarget{Kind: "Deployment", Name: "web"}
	ok := func() float64 { return testutil.ToFloat64(m.restarts.WithLabelValues("team-a", "Deployment", "ok")) }

	r.request(ctx, vs("a", web), clk.Now())
	waitFor(t, "the first restart", func() bool { return ok() == 1 })
	first := restartedAt(t, c, "web")
	if first != formatTime(t0) {
		t.Fatalf("web restarted at %q, want %q", first, formatTime(t0))
	}
	// Two more within the interval: one restart, at its end.
	clk.Step(5 * time.Second)
	r.request(ctx, vs("b", web), clk.Now())
	clk.Step(5 * time.Second)
	r.request(ctx, vs("c", web), clk.Now())
	time.Sleep(50 * time.Millisecond) // let the worker see them and defer them
	if got := ok(); got != 1 {
		t.Fatalf("%v restarts within the interval, want 1", got)
	}
	waitFor(t, "the deferred restart to be waiting", func() bool { return r.queue.Len() == 0 })
	clk.Step(20 * time.Second)
	waitFor(t, "the deferred restart", func() bool { return ok() == 2 })
	if got := restartedAt(t, c, "web"); got != formatTime(t0.Add(30*time.Second)) {
		t.Fatalf("web restarted again at %q, want at the interval's end %q", got, formatTime(t0.Add(30*time.Second)))
	}
	clk.Step(time.Minute)
	time.Sleep(50 * time.Millisecond)
	if got := ok(); got != 2 {
		t.Fatalf("%v restarts, want 2: three requests within one interval make two restarts, not three", got)
	}

	// A selector restarts exactly the Deployments whose labels match.
	r.request(ctx, vs("d", v1alpha1.RolloutRestartTarget{Kind: "Deployment", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "back"}}}), clk.Now())
	waitFor(t, "the selected restarts", func() bool { return ok() == 4 })
	for name, want := range map[string]bool{"api": true, "worker": true, "ui": false} {
		if got := restartedAt(t, c, name) != ""; got != want {
			t.Errorf("Deployment %s restarted: %v, want %v", name, got, want)
		}
	}

	// A missing target fails once, without retries, by kind.
	r.request(ctx, vs("e", v1alpha1.RolloutRestartTarget{Kind: "StatefulSet", Name: "gone"}), clk.Now())
	waitFor(t, "the failed restart", func() bool {
		return testutil.ToFloat64(m.restarts.WithLabelValues("team-a", "StatefulSet", "error")) == 1
	})
	var nilMetrics *Metrics
	nilMetrics.countRestart("ns", "Deployment", "ok") // a reconciler without metrics must not panic
}

// TestRestartRetriesOutlastAnAPIServerRestart: the tries of a restart
// that keeps failing with a retryable error span minutes, not
// milliseconds, so an API server restarting does not drop it.
func TestRestartRetriesOutlastAnAPIServerRestart(t *testing.T) {
	rl := restartRetries()
	w := workload{Namespace: "app", Kind: "Deployment", Name: "web"}
	var total time.Duration
	for i := 0; i < maxRestartRetries; i++ {
		d := rl.When(w)
		if i == 0 && d < time.Second {
			t.Fatalf("first retry after %s, want at least 1s", d)
		}
		if d > time.Minute {
			t.Fatalf("retry %d after %s, want at most 1m", i+1, d)
		}
		total += d
	}
	if total < 4*time.Minute || total > 10*time.Minute {
		t.Fatalf("%d tries span %s, want 4 to 10 minutes", maxRestartRetries, total)
	}
}

func TestDecideRestart(t *testing.T) {
	cases := []struct {
		name    string
		pending bool
		targets int
		known   RestartState
		want    RestartStep
	}{
		{"nothing pending", false, 1, RestartUnknown, RestartKeep},
		{"nothing pending, restarts settled", false, 1, RestartSettled, RestartKeep},
		{"pending, being carried out", true, 1, RestartQueued, RestartKeep},
		{"pending, carried out", true, 2, RestartSettled, RestartClear},
		{"pending, owed by an earlier process", true, 1, RestartUnknown, RestartResume},
		{"pending, targets removed since", true, 0, RestartUnknown, RestartClear},
		{"pending, targets removed while queued", true, 0, RestartQueued, RestartClear},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := DecideRestart(tc.pending, tc.targets, tc.known); got != tc.want {
				t.Fatalf("DecideRestart(%v, %d, %v) = %v, want %v", tc.pending, tc.targets, tc.known, got, tc.want)
			}
		})
	}
}

// TestRestarterTellsWhenOwedRestartsSettle: what the reconciler clears
// status.restartPendingSince on. A VaultSecret's restarts are queued
// until each of its workloads was restarted (a debounced one included),
// then settled for data of that time and not newer; Settled is told; a
// target naming no workload leaves nothing owed.
func TestRestarterTellsWhenOwedRestartsSettle(t *testing.T) {
	scheme := restartScheme(t)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "api"}}).Build()
	clk := clocktesting.NewFakeClock(t0)
	settled := make(chan client.ObjectKey, 8)
	r := &restarter{Client: c, APIReader: c, Status: &statusRecorder{}, Metrics: NewMetrics(prometheus.NewRegistry()), Clock: clk,
		MinInterval: 30 * time.Second, Settled: func(k client.ObjectKey) { settled <- k }}
	ctx := runRestarter(t, r)
	vs := func(name string, targets ...string) *v1alpha1.VaultSecret {
		v := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name}}
		for _, n := range targets {
			v.Spec.RolloutRestartTargets = append(v.Spec.RolloutRestartTargets, v1alpha1.RolloutRestartTarget{Kind: "Deployment", Name: n})
		}
		return v
	}
	a, b := client.ObjectKey{Namespace: "team-a", Name: "a"}, client.ObjectKey{Namespace: "team-a", Name: "b"}
	wantSettled := func(k client.ObjectKey) {
		t.Helper()
		select {
		case got := <-settled:
			if got != k {
				t.Fatalf("Settled told %s, want %s", got, k)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Settled never told %s", k)
		}
	}

	if got := r.state(a, t0); got != RestartUnknown {
		t.Fatalf("state before any request = %v, want RestartUnknown", got)
	}
	r.request(ctx, vs("a", "web"), t0)
	wantSettled(a)
	if got := r.state(a, t0); got != RestartSettled {
		t.Fatalf("state after web's restart = %v, want RestartSettled", got)
	}
	if got := r.state(a, t0.Add(time.Second)); got != RestartUnknown {
		t.Fatalf("state for data newer than the restart = %v, want RestartUnknown", got)
	}

	// b asks for web (debounced: restarted at the interval's end) and api
	// (at once): queued until both are done.
	clk.Step(5 * time.Second)
	since := clk.Now()
	r.request(ctx, vs("b", "web", "api"), since)
	waitFor(t, "api's restart", func() bool { return restartedAt(t, c, "api") != "" })
	waitFor(t, "web's restart to be deferred", func() bool { return r.queue.Len() == 0 })
	if got := r.state(b, since); got != RestartQueued {
		t.Fatalf("state with web's restart deferred = %v, want RestartQueued", got)
	}
	select {
	case k := <-settled:
		t.Fatalf("Settled told %s while web's restart waits", k)
	default:
	}
	clk.Step(25 * time.Second)
	wantSettled(b)
	if got := r.state(b, since); got != RestartSettled {
		t.Fatalf("state after both restarts = %v, want RestartSettled", got)
	}
	r.forget(b)
	if got := r.state(b, since); got != RestartUnknown {
		t.Fatalf("state after forget = %v, want RestartUnknown", got)
	}

	// A selector that matches nothing owes nothing.
	none := vs("c")
	none.Spec.RolloutRestartTargets = []v1alpha1.RolloutRestartTarget{{Kind: "Deployment", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "none"}}}}
	r.request(ctx, none, clk.Now())
	wantSettled(client.ObjectKey{Namespace: "team-a", Name: "c"})
}

// regardingRecorder keeps the UID and reason of every event.
type regardingRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *regardingRecorder) Eventf(regarding, _ runtime.Object, _, reason, _, _ string, _ ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, string(regarding.(metav1.Object).GetUID())+" "+reason)
}

func (r *regardingRecorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// TestRestartToldOnlyToWhoAsked: a VaultSecret deleted and made again
// under the same name before the restart it asked for is not told of it;
// the one that asked and is still there is.
func TestRestartToldOnlyToWhoAsked(t *testing.T) {
	scheme := restartScheme(t)
	vs := func(name, uid string) *v1alpha1.VaultSecret {
		return &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, UID: types.UID(uid)},
			Spec: v1alpha1.VaultSecretSpec{RolloutRestartTargets: []v1alpha1.RolloutRestartTarget{{Kind: "Deployment", Name: "web"}}}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web"}},
		vs("remade", "uid-new"), vs("kept", "uid-kept")).Build()
	rec := &regardingRecorder{}
	m := NewMetrics(prometheus.NewRegistry())
	r := &restarter{Client: c, APIReader: c, Status: &statusRecorder{Recorder: rec}, Metrics: m,
		Clock: clocktesting.NewFakeClock(t0), MinInterval: 30 * time.Second}
	ctx := context.Background()
	// Both ask before the restarter runs, so one restart tells both.
	r.request(ctx, vs("remade", "uid-old"), t0)
	r.request(ctx, vs("kept", "uid-kept"), t0)
	r.request(ctx, vs("deleted", "uid-gone"), t0)
	runRestarter(t, r)
	waitFor(t, "web's restart", func() bool {
		return testutil.ToFloat64(m.restarts.WithLabelValues("team-a", "Deployment", "ok")) == 1
	})
	waitFor(t, "the event", func() bool { return len(rec.events()) > 0 })
	time.Sleep(50 * time.Millisecond)
	if got := rec.events(); len(got) != 1 || got[0] != "uid-kept Restarted" {
		t.Fatalf("events %q, want only %q", got, "uid-kept Restarted")
	}
}

// TestOwedRestartNotSettledWhileStillAsking: a request whose first
// target restarts while its second is still being resolved (a selector's
// list in flight) is not settled until the second restarts too; it was
// settled at the first, and a controller ending then left the second
// unowed.
func TestOwedRestartNotSettledWhileStillAsking(t *testing.T) {
	scheme := restartScheme(t)
	m := NewMetrics(prometheus.NewRegistry())
	ok := func() float64 { return testutil.ToFloat64(m.restarts.WithLabelValues("team-a", "Deployment", "ok")) }
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "api", Labels: map[string]string{"tier": "back"}}}).
		WithInterceptorFuncs(interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			// The selector's list answers only once web has restarted.
			waitFor(t, "web's restart before the list answers", func() bool { return ok() == 1 })
			return c.List(ctx, list, opts...)
		}}).Build()
	settled := make(chan client.ObjectKey, 4)
	r := &restarter{Client: c, APIReader: c, Status: &statusRecorder{}, Metrics: m, Clock: clocktesting.NewFakeClock(t0),
		MinInterval: time.Hour, Settled: func(k client.ObjectKey) { settled <- k }}
	ctx := runRestarter(t, r)
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "a"},
		Spec: v1alpha1.VaultSecretSpec{RolloutRestartTargets: []v1alpha1.RolloutRestartTarget{
			{Kind: "Deployment", Name: "web"},
			{Kind: "Deployment", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "back"}}}}}}
	r.request(ctx, vs, t0)
	select {
	case <-settled:
		// (The restart's patch comes before the settling; its count after.)
		if restartedAt(t, c, "api") == "" {
			t.Fatal("settled before api, picked by the selector, was restarted")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never settled")
	}
	if got := r.state(client.ObjectKeyFromObject(vs), t0); got != RestartSettled {
		t.Fatalf("state %v after both restarts, want RestartSettled", got)
	}
}

// TestRestartAskedAgainAfterAFailedSelectorList: a selector's list that
// fails for a reason that may pass (the API server restarting) leaves the
// restart owed, not settled: the VaultSecret's pass is woken
// restartResolveRetry later and asks again, and the workload restarts.
// It was settled at once, so status stopped saying pending and the
// restart was lost.
func TestRestartAskedAgainAfterAFailedSelectorList(t *testing.T) {
	scheme := restartScheme(t)
	var failLists atomic.Int32
	failLists.Store(1)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "api", Labels: map[string]string{"tier": "back"}}}).
		WithInterceptorFuncs(interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if failLists.Add(-1) >= 0 {
				return apierrors.NewServiceUnavailable("the API server is restarting")
			}
			return c.List(ctx, list, opts...)
		}}).Build()
	m := NewMetrics(prometheus.NewRegistry())
	clk := clocktesting.NewFakeClock(t0)
	woken := make(chan client.ObjectKey, 4)
	r := &restarter{Client: c, APIReader: c, Status: &statusRecorder{}, Metrics: m, Clock: clk,
		MinInterval: time.Hour, Settled: func(k client.ObjectKey) { woken <- k }}
	ctx := runRestarter(t, r)
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "a"},
		Spec: v1alpha1.VaultSecretSpec{RolloutRestartTargets: []v1alpha1.RolloutRestartTarget{
			{Kind: "Deployment", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "back"}}}}}}
	key := client.ObjectKeyFromObject(vs)

	r.request(ctx, vs, t0)
	if got := r.state(key, t0); got != RestartUnknown {
		t.Fatalf("state after a failed list = %v, want RestartUnknown (owed still, asked again)", got)
	}
	select {
	case <-woken:
		t.Fatal("woken at once: a failing API server would be listed in a loop")
	case <-time.After(50 * time.Millisecond):
	}
	waitFor(t, "the retry timer", func() bool { return clk.HasWaiters() })
	clk.Step(restartResolveRetry)
	select {
	case k := <-woken:
		if k != key {
			t.Fatalf("woke %s, want %s", k, key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pass was never woken to ask again")
	}
	// The pass asks again (RestartResume): the list answers now.
	r.request(ctx, vs, t0)
	waitFor(t, "api's restart", func() bool { return restartedAt(t, c, "api") != "" })
	if got := <-woken; got != key {
		t.Fatalf("woke %s, want %s", got, key)
	}
	if got := r.state(key, t0); got != RestartSettled {
		t.Fatalf("state after the restart = %v, want RestartSettled", got)
	}
}

// restartScheme knows Deployments and VaultSecrets.
func restartScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := appsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return scheme
}

// runRestarter runs r until the test ends, and returns the context it
// runs under.
func runRestarter(t *testing.T, r *restarter) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

// TestClearedRestartNotAskedAgainAfterALostStatusWrite: a pass clears
// status.restartPendingSince once the restarts settled, and its status
// write is lost. The next pass still reads the field set; it must clear it
// again, not take the restarts for owed by an earlier process and restart
// every target a second time.
func TestClearedRestartNotAskedAgainAfterALostStatusWrite(t *testing.T) {
	scheme := restartScheme(t)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web"}}).Build()
	clk := clocktesting.NewFakeClock(t0)
	settled := make(chan client.ObjectKey, 8)
	m := NewMetrics(prometheus.NewRegistry())
	rs := &restarter{Client: c, APIReader: c, Status: &statusRecorder{}, Metrics: m, Clock: clk,
		MinInterval: 30 * time.Second, Settled: func(k client.ObjectKey) { settled <- k }}
	ctx := runRestarter(t, rs)
	r := &Reconciler{restarts: rs}
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "a"},
		Spec: v1alpha1.VaultSecretSpec{RolloutRestartTargets: []v1alpha1.RolloutRestartTarget{{Kind: "Deployment", Name: "web"}}}}
	vs.Status.RestartPendingSince = ptrTime(t0)
	rs.request(ctx, vs, t0)
	select {
	case <-settled:
	case <-time.After(10 * time.Second):
		t.Fatal("the restart never settled")
	}
	restarts := func() float64 {
		return testutil.ToFloat64(m.restarts.WithLabelValues("team-a", "Deployment", "ok"))
	}
	// (The count follows the Settled call.)
	waitFor(t, "the restart's count", func() bool { return restarts() == 1 })

	clearing := vs.DeepCopy()
	r.settleRestarts(ctx, clearing)
	if clearing.Status.RestartPendingSince != nil {
		t.Fatal("settled restarts not cleared from status")
	}
	// That status write is lost: the next pass reads the field still set.
	again := vs.DeepCopy()
	r.settleRestarts(ctx, again)
	if again.Status.RestartPendingSince != nil {
		t.Fatal("the pass after a lost clearing write did not clear the field again")
	}
	clk.Step(time.Minute) // past the restart interval: a second request would run
	time.Sleep(300 * time.Millisecond)
	if n := restarts(); n != 1 {
		t.Fatalf("%v restarts after a lost clearing write, want 1: the targets were restarted again", n)
	}
	// Once status says none is pending, the settled record goes.
	r.settleRestarts(ctx, clearing)
	if got := rs.state(client.ObjectKeyFromObject(vs), t0); got != RestartUnknown {
		t.Fatalf("state once status holds no pending restart = %v, want RestartUnknown", got)
	}
}
