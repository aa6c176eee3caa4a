package autopilot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rotation"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestNextRotation(t *testing.T) {
	last := t0.Add(time.Hour)
	for _, c := range []struct {
		name string
		last *time.Time
		want time.Time
	}{
		{"never rotated by the policy: from the latest version's creation", nil, t0.Add(24 * time.Hour)},
		{"rotated by the policy since", &last, last.Add(24 * time.Hour)},
	} {
		if got := NextRotation(c.last, t0, 24*time.Hour); !got.Equal(c.want) {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestUnfinished(t *testing.T) {
	for _, c := range []struct {
		latest, min int
		want        bool
	}{{1, 0, false}, {1, 1, false}, {2, 1, true}, {2, 2, false}, {3, 2, true}, {2, 0, true}} {
		if got := Unfinished(c.latest, c.min); got != c.want {
			t.Errorf("Unfinished(%d, %d) = %v", c.latest, c.min, got)
		}
	}
}

func TestWaitAPIServers(t *testing.T) {
	gateErr := errors.New("still on the old key_id")
	for _, c := range []struct {
		name string
		err  error
		now  time.Time
		want GateVerdict
	}{
		{"passed", nil, t0.Add(time.Hour), GatePass},
		{"failing, within the timeout", gateErr, t0.Add(time.Minute), GateWait},
		{"failing at the timeout", gateErr, t0.Add(10 * time.Minute), GateStop},
		{"failing past the timeout", gateErr, t0.Add(time.Hour), GateStop},
	} {
		if got := WaitAPIServers(c.err, t0, 10*time.Minute, c.now); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestTrimDue(t *testing.T) {
	for _, c := range []struct {
		now  time.Time
		due  bool
		left time.Duration
	}{{t0, false, time.Hour}, {t0.Add(59 * time.Minute), false, time.Minute}, {t0.Add(time.Hour), true, 0}, {t0.Add(2 * time.Hour), true, 0}} {
		due, left := TrimDue(t0, time.Hour, c.now)
		if due != c.due || left != c.left {
			t.Errorf("at %s: %v %s, want %v %s", c.now, due, left, c.due, c.left)
		}
	}
}

func TestShouldResume(t *testing.T) {
	stopped := func(gen, observed int64, ann, resumed string) *v1alpha1.RotationPolicy {
		p := &v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Generation: gen}}
		if ann != "" {
			p.Annotations = map[string]string{v1alpha1.ResumeAnnotation: ann}
		}
		p.Status = v1alpha1.RotationPolicyStatus{Stage: v1alpha1.StageStopped, ObservedGeneration: observed, ResumedWith: resumed}
		return p
	}
	for _, c := range []struct {
		name string
		p    *v1alpha1.RotationPolicy
		want bool
	}{
		{"stopped, nothing changed", stopped(2, 2, "", ""), false},
		{"spec changed", stopped(3, 2, "", ""), true},
		{"new resume annotation", stopped(2, 2, "1", ""), true},
		{"resume annotation already acted on", stopped(2, 2, "1", "1"), false},
		{"resume annotation changed again", stopped(2, 2, "2", "1"), true},
		{"not stopped", &v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Generation: 5}, Status: v1alpha1.RotationPolicyStatus{Stage: v1alpha1.StageIdle}}, false},
	} {
		if got := ShouldResume(c.p); got != c.want {
			t.Errorf("%s: %v", c.name, got)
		}
	}
}

func TestResumeStage(t *testing.T) {
	for _, c := range []struct {
		stopped v1alpha1.RotationStage
		reason  string
		want    v1alpha1.RotationStage
	}{
		{"", v1alpha1.ReasonGateAPIServers, v1alpha1.StageIdle},
		{v1alpha1.StageIdle, v1alpha1.ReasonGateVaultRotate, v1alpha1.StageIdle},
		{v1alpha1.StageRotating, v1alpha1.ReasonGateVaultRotate, v1alpha1.StageRotating},
		{v1alpha1.StageWaitingForAPIServers, v1alpha1.ReasonGateAPIServers, v1alpha1.StageWaitingForAPIServers},
		{v1alpha1.StageReencrypting, v1alpha1.ReasonGateReencrypt, v1alpha1.StageReencrypting},
		{v1alpha1.StageVerifying, v1alpha1.ReasonGateStaleRemain, v1alpha1.StageReencrypting},
		{v1alpha1.StageWaitingToTrim, v1alpha1.ReasonGateAPIServers, v1alpha1.StageTrimming},
		{v1alpha1.StageTrimming, v1alpha1.ReasonGateStaleRemain, v1alpha1.StageTrimming},
		// A new target: no API server has been seen to use it yet.
		{v1alpha1.StageRotating, v1alpha1.ReasonGateKeyChanged, v1alpha1.StageWaitingForAPIServers},
		{v1alpha1.StageReencrypting, v1alpha1.ReasonGateKeyChanged, v1alpha1.StageWaitingForAPIServers},
		{v1alpha1.StageVerifying, v1alpha1.ReasonGateKeyChanged, v1alpha1.StageWaitingForAPIServers},
		{v1alpha1.StageTrimming, v1alpha1.ReasonGateKeyChanged, v1alpha1.StageWaitingForAPIServers},
	} {
		if got := ResumeStage(c.stopped, c.reason); got != c.want {
			t.Errorf("ResumeStage(%q, %q) = %q, want %q", c.stopped, c.reason, got, c.want)
		}
	}
}

func TestFirstForKey(t *testing.T) {
	pol := func(name string, created time.Time, mount, key string) v1alpha1.RotationPolicy {
		return v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
			Spec: v1alpha1.RotationPolicySpec{Transit: v1alpha1.TransitKeyRef{Mount: mount, Key: key}}}
	}
	all := []v1alpha1.RotationPolicy{pol("b", t0, "transit", "k"), pol("a", t0.Add(time.Hour), "transit/", "k"), pol("c", t0, "", "k"), pol("d", t0, "transit", "other")}
	for name, want := range map[string]string{"a": "b", "b": "", "c": "b", "d": ""} {
		var p v1alpha1.RotationPolicy
		for _, q := range all {
			if q.Name == name {
				p = q
			}
		}
		if got := FirstForKey(all, &p); got != want {
			t.Errorf("FirstForKey(%s) = %q, want %q", name, got, want)
		}
	}
}

// fakeEnv is a Transit key and gates that pass unless told otherwise.
type fakeEnv struct {
	clk                     *clocktesting.FakeClock
	latest, min             int
	rotations, trims        int
	rotateErr, keyErr       error
	preflightErr, apiErr    error
	reencryptErr, verifyErr error
	trimGateErr, setMinErr  error
	reencrypt               ReencryptResult
	apiServersFrom          time.Time // the gate passes from this time on
	calls                   []string
	created                 map[int]time.Time
	// duringTrimGates runs while the trim gates scan: a change to the
	// key by hand in those minutes.
	duringTrimGates func()
}

func (f *fakeEnv) Key(context.Context, Settings) (keysource.TransitKey, error) {
	if f.keyErr != nil {
		return keysource.TransitKey{}, f.keyErr
	}
	vs := map[int]time.Time{}
	for v := 1; v <= f.latest; v++ {
		vs[v] = f.createdAt(v)
	}
	return keysource.TransitKey{Current: transitkey.NewKeyID("", "transit", "k", f.latest, vs[f.latest]),
		LatestVersion: f.latest, MinDecryption: f.min, Versions: vs}, nil
}

func (f *fakeEnv) Rotate(context.Context, Settings) error {
	f.calls = append(f.calls, "rotate")
	if f.rotateErr != nil {
		return f.rotateErr
	}
	f.latest++
	f.rotations++
	if f.created == nil {
		f.created = map[int]time.Time{}
	}
	f.created[f.latest] = f.clk.Now()
	return nil
}

func (f *fakeEnv) SetMinDecryption(_ context.Context, _ Settings, latest, to int) (transitkey.Trim, error) {
	f.calls = append(f.calls, fmt.Sprintf("trim %d", to))
	done := transitkey.Trim{From: max(1, f.min)}
	if f.setMinErr != nil {
		return done, f.setMinErr
	}
	// As transitkey.RaiseMinDecryption does against Vault.
	if f.latest != latest {
		return done, fmt.Errorf("%w: latest %d, checked %d", transitkey.ErrKeyChanged, f.latest, latest)
	}
	if f.min >= to {
		return done, nil
	}
	f.min = to
	f.trims++
	done.Raised = true
	return done, nil
}

func (f *fakeEnv) Preflight(context.Context, Settings, keysource.TransitKey) error {
	return f.preflightErr
}

func (f *fakeEnv) APIServers(context.Context, Settings, keysource.TransitKey) error {
	if f.apiErr != nil {
		return f.apiErr
	}
	if f.clk.Now().Before(f.apiServersFrom) {
		return rotation.Refuse(rotation.GateAPIServers, errors.New("https://a/metrics: still reports another key_id"))
	}
	return nil
}

func (f *fakeEnv) Reencrypt(context.Context, Settings, keysource.TransitKey) (ReencryptResult, error) {
	f.calls = append(f.calls, "reencrypt")
	return f.reencrypt, f.reencryptErr
}

func (f *fakeEnv) Verify(context.Context, Settings, keysource.TransitKey, int) error {
	return f.verifyErr
}

func (f *fakeEnv) TrimGates(context.Context, Settings, keysource.TransitKey, int) error {
	if f.duringTrimGates != nil {
		f.duringTrimGates()
	}
	return f.trimGateErr
}

func newPolicy() *v1alpha1.RotationPolicy {
	return &v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "transit-k", Generation: 1},
		Spec: v1alpha1.RotationPolicySpec{Transit: v1alpha1.TransitKeyRef{Key: "k"}, RotateEvery: metav1.Duration{Duration: 24 * time.Hour},
			TrimAfter: &metav1.Duration{Duration: time.Hour}, APIServers: v1alpha1.APIServerGate{Timeout: &metav1.Duration{Duration: 10 * time.Minute}}}}
}

// run steps p until it rests (no requeue, or a requeue longer than
// maxWait), advancing the fake clock by each requeue, and returns the
// events seen.
func run(t *testing.T, m *Machine, clk *clocktesting.FakeClock, p *v1alpha1.RotationPolicy, until func(*v1alpha1.RotationPolicy) bool) []Event {
	t.Helper()
	var evs []Event
	for i := 0; i < 1000; i++ {
		out := m.Step(context.Background(), p)
		p.Status = out.Status
		evs = append(evs, out.Events...)
		if until(p) || out.Requeue == 0 {
			return evs
		}
		clk.Step(out.Requeue)
	}
	t.Fatalf("no rest after 1000 steps: %+v", p.Status)
	return nil
}

func stage(s v1alpha1.RotationStage) func(*v1alpha1.RotationPolicy) bool {
	return func(p *v1alpha1.RotationPolicy) bool { return p.Status.Stage == s }
}

func reasons(evs []Event) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Reason)
	}
	return strings.Join(out, ",")
}

func TestFullCycle(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(23 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1, reencrypt: ReencryptResult{Stale: 3, Rewritten: 3}}
	f.apiServersFrom = t0.Add(24*time.Hour + 90*time.Second)
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	evs := run(t, m, clk, p, stage(v1alpha1.StageDone))
	if p.Status.Stage != v1alpha1.StageDone || f.rotations != 1 || f.trims != 1 || f.min != 2 || p.Status.TargetVersion != 2 || p.Status.MinDecryptionVersion != 2 {
		t.Fatalf("after the cycle: %+v, %d rotations, %d trims, min %d", p.Status, f.rotations, f.trims, f.min)
	}
	want := "Rotating,Rotated,WaitingForAPIServers,Reencrypting,Verifying,WaitingToTrim,Trimming,Trimmed,Done"
	if got := reasons(evs); got != want {
		t.Fatalf("events %s\nwant   %s", got, want)
	}
	if fmt.Sprint(f.calls) != "[rotate reencrypt trim 2]" {
		t.Fatalf("calls %v", f.calls)
	}
	// Not before the trimAfter since verification, and not before the API
	// servers agreed.
	if p.Status.LastTrimTime.Sub(p.Status.VerifiedTime.Time) < time.Hour || p.Status.VerifiedTime.Time.Before(f.apiServersFrom) {
		t.Fatalf("verified %s, trimmed %s", p.Status.VerifiedTime, p.Status.LastTrimTime)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 1 {
		t.Fatalf("Ready %+v", c)
	}
	// The next cycle is due rotateEvery after this rotation.
	if want := p.Status.LastRotationTime.Add(24 * time.Hour); !p.Status.NextRotationTime.Time.Equal(want) {
		t.Fatalf("next rotation %s, want %s", p.Status.NextRotationTime, want)
	}
	out := m.Step(context.Background(), p)
	if out.Status.Stage != v1alpha1.StageDone || f.rotations != 1 || out.Requeue <= 0 {
		t.Fatalf("a step after Done rotated or stopped: %+v", out)
	}
}

// TestProgressingThroughoutACycle: Progressing is True at every step of
// a cycle, the waits included (the API server gate's minutes, trimAfter's
// hours), and False once it is Done: a user who waits for
// Progressing=False waits for the cycle's end. The waiting steps used to
// set it False.
func TestProgressingThroughoutACycle(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(23 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1, reencrypt: ReencryptResult{Stale: 3, Rewritten: 3}}
	f.apiServersFrom = t0.Add(24*time.Hour + 90*time.Second)
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	seen := map[v1alpha1.RotationStage]int{}
	check := func(p *v1alpha1.RotationPolicy) {
		t.Helper()
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionProgressing)
		inCycle := p.Status.Stage != v1alpha1.StageIdle && p.Status.Stage != v1alpha1.StageDone && p.Status.Stage != ""
		if c == nil || (c.Status == metav1.ConditionTrue) != inCycle {
			t.Errorf("at %s (step %d there): Progressing %+v, want True exactly while in a cycle", p.Status.Stage, seen[p.Status.Stage], c)
		}
		seen[p.Status.Stage]++
	}
	run(t, m, clk, p, func(p *v1alpha1.RotationPolicy) bool { check(p); return p.Status.Stage == v1alpha1.StageWaitingToTrim })
	// A step before trimAfter ends (a restart, an edit wakes it).
	clk.Step(time.Minute)
	out := m.Step(context.Background(), p)
	p.Status = out.Status
	check(p)
	run(t, m, clk, p, func(p *v1alpha1.RotationPolicy) bool { check(p); return p.Status.Stage == v1alpha1.StageDone })
	for _, st := range []v1alpha1.RotationStage{v1alpha1.StageWaitingForAPIServers, v1alpha1.StageWaitingToTrim, v1alpha1.StageDone} {
		if seen[st] < 2 && st != v1alpha1.StageDone || seen[st] == 0 {
			t.Errorf("%d steps at %s: the test needs the wait's steps too", seen[st], st)
		}
	}
}

func TestNothingBeforeDue(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	out := m.Step(context.Background(), p)
	if out.Status.Stage != v1alpha1.StageIdle || f.rotations != 0 || out.Requeue != IdleRecheck || !out.Status.NextRotationTime.Time.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("before due: %+v", out)
	}
}

func TestRestartDoesNotRotateTwice(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	// Idle -> Rotating is persisted first.
	p.Status = m.Step(context.Background(), p).Status
	if p.Status.Stage != v1alpha1.StageRotating || p.Status.TargetVersion != 2 || f.rotations != 0 {
		t.Fatalf("%+v", p.Status)
	}
	saved := *p.Status.DeepCopy()
	// The rotation happens, then the process dies before persisting.
	m.Step(context.Background(), p)
	if f.rotations != 1 {
		t.Fatal("did not rotate")
	}
	// A new leader starts from the saved status, and gives the event the
	// first could not.
	p.Status = saved
	out := m.Step(context.Background(), p)
	if f.rotations != 1 || out.Status.Stage != v1alpha1.StageWaitingForAPIServers || out.Status.TargetVersion != 2 {
		t.Fatalf("after a restart: %d rotations, %+v", f.rotations, out.Status)
	}
	if reasons(out.Events) != "Rotated,WaitingForAPIServers" {
		t.Fatalf("events after a restart: %s", reasons(out.Events))
	}
}

func TestAdoptsUnfinishedRotation(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(30 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 3, min: 2}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	out := m.Step(context.Background(), p)
	if f.rotations != 0 || out.Status.Stage != v1alpha1.StageWaitingForAPIServers || out.Status.TargetVersion != 3 || reasons(out.Events) != "AdoptedRotation,WaitingForAPIServers" {
		t.Fatalf("%d rotations, %+v %v", f.rotations, out.Status, out.Events)
	}
}

func TestGateFailuresStop(t *testing.T) {
	denied := vault.Wrap("rotate", &api.ResponseError{StatusCode: 403, Errors: []string{"permission denied"}})
	for _, c := range []struct {
		name      string
		set       func(*fakeEnv)
		at        v1alpha1.RotationStage
		reason    string
		rotations int
	}{
		{"no evidence before rotating", func(f *fakeEnv) {
			f.preflightErr = rotation.Refuse(rotation.GateNoEvidence, errors.New("no value in etcd is encrypted under transit/k"))
		}, v1alpha1.StageIdle, v1alpha1.ReasonGateNoEvidence, 0},
		{"wrong prefix", func(f *fakeEnv) {
			f.preflightErr = rotation.Refuse(rotation.GatePrefix, errors.New("etcd has no /x/namespaces/default"))
		},
			v1alpha1.StageIdle, v1alpha1.ReasonGatePrefix, 0},
		{"key mismatch", func(f *fakeEnv) { f.preflightErr = rotation.Refuse(GateKeyMismatch, errors.New("other key")) },
			v1alpha1.StageIdle, v1alpha1.ReasonGateKeyMismatch, 0},
		{"vault refuses rotate", func(f *fakeEnv) { f.rotateErr = denied }, v1alpha1.StageRotating, v1alpha1.ReasonGateVaultRotate, 0},
		{"an API server never reports the new key_id", func(f *fakeEnv) { f.apiServersFrom = t0.Add(1000 * time.Hour) },
			v1alpha1.StageWaitingForAPIServers, v1alpha1.ReasonGateAPIServers, 1},
		{"re-encryption fails for some objects", func(f *fakeEnv) {
			f.reencrypt = ReencryptResult{Stale: 4, Rewritten: 3, Failed: 1, Errors: []string{"configmaps default/a: forbidden"}}
		}, v1alpha1.StageReencrypting, v1alpha1.ReasonGateReencrypt, 1},
		{"objects stay stale", func(f *fakeEnv) {
			f.verifyErr = rotation.Refuse(rotation.GateStale, errors.New("1 objects in etcd still need versions below 2"))
		}, v1alpha1.StageVerifying, v1alpha1.ReasonGateStaleRemain, 1},
		{"trim gate: an API server falls back", func(f *fakeEnv) {
			f.trimGateErr = rotation.Refuse(rotation.GateAPIServers, errors.New("cannot read metrics"))
		}, v1alpha1.StageTrimming, v1alpha1.ReasonGateAPIServers, 1},
		{"trim gate: stale found at the last scan", func(f *fakeEnv) {
			f.trimGateErr = rotation.Refuse(rotation.GateStale, errors.New("1 objects below 2"))
		}, v1alpha1.StageTrimming, v1alpha1.ReasonGateStaleRemain, 1},
		{"vault refuses trim", func(f *fakeEnv) { f.setMinErr = denied }, v1alpha1.StageTrimming, v1alpha1.ReasonGateVaultTrim, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
			f := &fakeEnv{clk: clk, latest: 1, min: 1}
			c.set(f)
			m := &Machine{Env: f, Clock: clk}
			p := newPolicy()
			evs := run(t, m, clk, p, stage(v1alpha1.StageStopped))
			st := p.Status
			if st.Stage != v1alpha1.StageStopped || st.StoppedStage != c.at || f.rotations != c.rotations {
				t.Fatalf("stage %s stopped at %s (want %s), %d rotations (want %d)", st.Stage, st.StoppedStage, c.at, f.rotations, c.rotations)
			}
			if f.min != 1 || f.trims != 0 && c.reason != v1alpha1.ReasonGateVaultTrim {
				t.Fatalf("trimmed after a failed gate: min %d", f.min)
			}
			cs := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStopped)
			ready := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
			if cs == nil || cs.Status != metav1.ConditionTrue || cs.Reason != c.reason || !strings.Contains(cs.Message, "resume") ||
				ready == nil || ready.Status != metav1.ConditionFalse {
				t.Fatalf("conditions %+v", st.Conditions)
			}
			last := evs[len(evs)-1]
			if last.Type != "Warning" || last.Reason != c.reason {
				t.Fatalf("last event %+v", last)
			}
			// Stopped stays stopped: no requeue, nothing done.
			calls := len(f.calls)
			clk.Step(1000 * time.Hour)
			out := m.Step(context.Background(), p)
			if out.Status.Stage != v1alpha1.StageStopped || out.Requeue != 0 || len(out.Events) != 0 || len(f.calls) != calls {
				t.Fatalf("a stopped policy acted: %+v", out)
			}
		})
	}
}

func TestRetryIsNotStop(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1, keyErr: vault.Wrap("read", &api.ResponseError{StatusCode: 503})}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	out := m.Step(context.Background(), p)
	if out.Status.Stage != v1alpha1.StageIdle || out.Requeue != RetryAfter || reasons(out.Events) != v1alpha1.ReasonRetrying {
		t.Fatalf("%+v", out)
	}
	p.Status = out.Status
	// The same error again is not a second event.
	if out = m.Step(context.Background(), p); len(out.Events) != 0 {
		t.Fatalf("repeated event %+v", out.Events)
	}
	// A Vault error while rotating that is not a refusal is retried too.
	f.keyErr = nil
	f.rotateErr = vault.Wrap("rotate", &api.ResponseError{StatusCode: 503})
	p.Status = m.Step(context.Background(), p).Status
	out = m.Step(context.Background(), p)
	if out.Status.Stage != v1alpha1.StageRotating || out.Requeue != RetryAfter {
		t.Fatalf("%+v", out.Status)
	}
}

func TestResumeAfterStop(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1, verifyErr: rotation.Refuse(rotation.GateStale, errors.New("1 stale"))}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	run(t, m, clk, p, stage(v1alpha1.StageStopped))
	if p.Status.StoppedStage != v1alpha1.StageVerifying {
		t.Fatalf("%+v", p.Status)
	}
	// The operator fixes it and resumes with the annotation.
	f.verifyErr = nil
	p.Annotations = map[string]string{v1alpha1.ResumeAnnotation: "1"}
	evs := run(t, m, clk, p, stage(v1alpha1.StageDone))
	if p.Status.Stage != v1alpha1.StageDone || f.rotations != 1 || f.min != 2 || p.Status.ResumedWith != "1" {
		t.Fatalf("%+v, %d rotations", p.Status, f.rotations)
	}
	if !strings.HasPrefix(reasons(evs), "Resumed,Reencrypting,Verifying") {
		t.Fatalf("events %s", reasons(evs))
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionStopped); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("Stopped condition after resume %+v", c)
	}
}

func TestSuspend(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	p.Spec.Suspend = true
	out := m.Step(context.Background(), p)
	if f.rotations != 0 || len(f.calls) != 0 || out.Requeue != 0 {
		t.Fatalf("suspended policy acted: %+v", out)
	}
	if c := meta.FindStatusCondition(out.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != v1alpha1.ReasonSuspended {
		t.Fatalf("%+v", out.Status.Conditions)
	}
	// Suspending a stopped policy keeps the reason; clearing suspend (a
	// spec change) resumes it.
	f.preflightErr = rotation.Refuse(rotation.GateNoEvidence, errors.New("nothing found"))
	p.Spec.Suspend = false
	p.Status = m.Step(context.Background(), p).Status
	if p.Status.Stage != v1alpha1.StageStopped {
		t.Fatalf("%+v", p.Status)
	}
	p.Spec.Suspend, p.Generation = true, 2
	p.Status = m.Step(context.Background(), p).Status
	if p.Status.Stage != v1alpha1.StageStopped || stoppedReason(p.Status) != v1alpha1.ReasonGateNoEvidence {
		t.Fatalf("suspending lost the stop: %+v", p.Status)
	}
	f.preflightErr = nil
	p.Spec.Suspend, p.Generation = false, 3
	out = m.Step(context.Background(), p)
	if out.Status.Stage != v1alpha1.StageIdle || reasons(out.Events) != "Resumed,Idle" {
		t.Fatalf("clearing suspend did not resume: %+v", out)
	}
}

func TestKeyChangedStops(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1, apiServersFrom: t0.Add(1000 * time.Hour)}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	run(t, m, clk, p, stage(v1alpha1.StageWaitingForAPIServers))
	f.latest = 3 // someone rotated twice meanwhile
	out := m.Step(context.Background(), p)
	if out.Status.Stage != v1alpha1.StageStopped || stoppedReason(out.Status) != v1alpha1.ReasonGateKeyChanged {
		t.Fatalf("%+v", out.Status)
	}
}

// TestResumeAfterKeyChanged changes the key outside the policy at several
// stages of a cycle; once resumed, the cycle finishes on the key as it is
// now, waiting for the API servers to use the new version before it
// re-encrypts, and never stops again nor rotates once more.
func TestResumeAfterKeyChanged(t *testing.T) {
	for _, c := range []struct {
		name string
		at   v1alpha1.RotationStage // where the key changes
		// change is what happened to the key, outside the policy.
		change func(f *fakeEnv)
	}{
		{"rotated by hand while waiting to trim", v1alpha1.StageWaitingToTrim, func(f *fakeEnv) { f.latest++ }},
		{"rotated by hand while re-encrypting", v1alpha1.StageReencrypting, func(f *fakeEnv) { f.latest++ }},
		{"rotated by hand while waiting for the API servers", v1alpha1.StageWaitingForAPIServers, func(f *fakeEnv) { f.latest++ }},
		{"recreated before the policy rotated it", v1alpha1.StageRotating, func(f *fakeEnv) { f.latest, f.min, f.created = 1, 1, nil }},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Version 3 (made at t0+2h) is due for rotation at t0+26h.
			clk := clocktesting.NewFakeClock(t0.Add(27 * time.Hour))
			f := &fakeEnv{clk: clk, latest: 3, min: 3, reencrypt: ReencryptResult{Stale: 3, Rewritten: 3}}
			m := &Machine{Env: f, Clock: clk}
			p := newPolicy()
			run(t, m, clk, p, stage(c.at))
			if p.Status.Stage != c.at {
				t.Fatalf("never reached %s: %+v", c.at, p.Status)
			}
			c.change(f)
			run(t, m, clk, p, stage(v1alpha1.StageStopped))
			if p.Status.Stage != v1alpha1.StageStopped || stoppedReason(p.Status) != v1alpha1.ReasonGateKeyChanged {
				t.Fatalf("the change did not stop the cycle: %+v", p.Status)
			}
			latest, rotations := f.latest, f.rotations
			// The API servers take the new version a minute after the
			// resume: nothing may be re-encrypted before.
			f.apiServersFrom = clk.Now().Add(time.Minute)
			f.calls = nil
			p.Annotations = map[string]string{v1alpha1.ResumeAnnotation: "1"}
			var seen []v1alpha1.RotationStage
			evs := run(t, m, clk, p, func(p *v1alpha1.RotationPolicy) bool {
				seen = append(seen, p.Status.Stage)
				if p.Status.Stage == v1alpha1.StageReencrypting && clk.Now().Before(f.apiServersFrom) {
					t.Fatalf("re-encrypting at %s, before the API servers use version %d (%s)", clk.Now(), latest, f.apiServersFrom)
				}
				return p.Status.Stage == v1alpha1.StageDone || p.Status.Stage == v1alpha1.StageStopped
			})
			if p.Status.Stage != v1alpha1.StageDone {
				t.Fatalf("after the resume: stages %v, events %s, status %+v", seen, reasons(evs), p.Status)
			}
			if p.Status.TargetVersion != latest || f.min != latest || f.rotations != rotations {
				t.Fatalf("target %d, min %d, %d rotations; want %d, %d, %d", p.Status.TargetVersion, f.min, f.rotations, latest, latest, rotations)
			}
			if !strings.HasPrefix(reasons(evs), "Resumed,WaitingForAPIServers,Reencrypting,Verifying,WaitingToTrim") {
				t.Fatalf("events %s", reasons(evs))
			}
			// The next rotation is due rotateEvery after the version the
			// cycle adopted was made.
			if want := f.createdAt(latest).Add(24 * time.Hour); !p.Status.NextRotationTime.Time.Equal(want) {
				t.Fatalf("next rotation %s, want %s", p.Status.NextRotationTime, want)
			}
		})
	}
}

// createdAt is when the fake made version v: an hour apart from t0, or
// when its Rotate did.
func (f *fakeEnv) createdAt(v int) time.Time {
	if c, ok := f.created[v]; ok {
		return c
	}
	return t0.Add(time.Duration(v-1) * time.Hour)
}

// TestTrimAgainstTheKeyAsItIsNow changes the key by hand while the trim
// gates scan (minutes, on an earlier read of the key): the trim never
// lowers a min_decryption_version raised meanwhile, and never trims a key
// rotated meanwhile.
func TestTrimAgainstTheKeyAsItIsNow(t *testing.T) {
	for _, c := range []struct {
		name       string
		during     func(f *fakeEnv)
		wantStage  v1alpha1.RotationStage
		wantMin    int
		wantEvents string // after WaitingToTrim
	}{
		{"nothing changes", func(*fakeEnv) {}, v1alpha1.StageDone, 2, "Trimming,Trimmed,Done"},
		{"rotated and trimmed by hand to version 3", func(f *fakeEnv) { f.latest, f.min = 3, 3 }, v1alpha1.StageStopped, 3, "Trimming,KeyChanged"},
		{"rotated by hand to version 3", func(f *fakeEnv) { f.latest = 3 }, v1alpha1.StageStopped, 1, "Trimming,KeyChanged"},
		// The undo is given, though nothing was written.
		{"trimmed by hand to version 2", func(f *fakeEnv) { f.min = 2 }, v1alpha1.StageDone, 2, "Trimming,Trimmed,Done"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
			f := &fakeEnv{clk: clk, latest: 1, min: 1}
			m := &Machine{Env: f, Clock: clk}
			p := newPolicy()
			run(t, m, clk, p, stage(v1alpha1.StageWaitingToTrim))
			f.duringTrimGates = func() { c.during(f); f.duringTrimGates = nil }
			evs := run(t, m, clk, p, func(p *v1alpha1.RotationPolicy) bool {
				return p.Status.Stage == v1alpha1.StageDone || p.Status.Stage == v1alpha1.StageStopped
			})
			if p.Status.Stage != c.wantStage || f.min != c.wantMin || reasons(evs) != c.wantEvents {
				t.Fatalf("stage %s, min %d, events %s; want %s, %d, %s", p.Status.Stage, f.min, reasons(evs), c.wantStage, c.wantMin, c.wantEvents)
			}
			if c.wantStage == v1alpha1.StageDone && p.Status.MinDecryptionVersion != c.wantMin {
				t.Fatalf("status min_decryption_version %d, Vault's %d", p.Status.MinDecryptionVersion, c.wantMin)
			}
		})
	}
}

// TestSuspendDoesNotCountTowardsTheTimeout suspends a cycle waiting for
// the API servers for longer than the wait's timeout: once cleared, the
// wait has its whole timeout again instead of stopping at its first
// failed check.
func TestSuspendDoesNotCountTowardsTheTimeout(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1, apiServersFrom: t0.Add(1000 * time.Hour)}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy() // timeout 10m
	run(t, m, clk, p, stage(v1alpha1.StageWaitingForAPIServers))
	p.Spec.Suspend = true
	p.Status = m.Step(context.Background(), p).Status
	clk.Step(time.Hour)
	p.Spec.Suspend = false
	out := m.Step(context.Background(), p)
	if out.Status.Stage != v1alpha1.StageWaitingForAPIServers || out.Requeue == 0 {
		t.Fatalf("the first check after an hour's suspension: %+v", out.Status)
	}
	p.Status = out.Status
	// The timeout still holds once the wait has run that long.
	f.apiServersFrom = clk.Now().Add(time.Hour)
	run(t, m, clk, p, stage(v1alpha1.StageStopped))
	if stoppedReason(p.Status) != v1alpha1.ReasonGateAPIServers || p.Status.StageTime.Sub(out.Status.StageTime.Time) < 10*time.Minute {
		t.Fatalf("after the timeout: %+v", p.Status)
	}
}

// TestTrimRecordedAfterAFailedStatusWrite trims, then loses the status
// write that records it (a conflict, a restart): the next step writes
// nothing to Vault again, and still gives the Trimmed event with the undo
// an operator needs to restore an older etcd backup.
func TestTrimRecordedAfterAFailedStatusWrite(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0.Add(25 * time.Hour))
	f := &fakeEnv{clk: clk, latest: 1, min: 1}
	m := &Machine{Env: f, Clock: clk}
	p := newPolicy()
	run(t, m, clk, p, stage(v1alpha1.StageTrimming))
	lost := m.Step(context.Background(), p) // trims; its status is never written
	if f.trims != 1 || reasons(lost.Events) != "Trimmed,Done" {
		t.Fatalf("the trim step: %d trims, events %s", f.trims, reasons(lost.Events))
	}
	out := m.Step(context.Background(), p)
	if f.trims != 1 || out.Status.Stage != v1alpha1.StageDone || out.Status.MinDecryptionVersion != 2 {
		t.Fatalf("the step after the lost write: %d trims, %+v", f.trims, out.Status)
	}
	if reasons(out.Events) != "Trimmed,Done" || !strings.Contains(out.Events[0].Note, "min_decryption_version=1") {
		t.Fatalf("events after the lost write: %+v", out.Events)
	}
	// Once recorded, no further Trimmed event.
	p.Status = out.Status
	if again := m.Step(context.Background(), p); strings.Contains(reasons(again.Events), "Trimmed") {
		t.Fatalf("a Trimmed event again: %+v", again.Events)
	}
}
