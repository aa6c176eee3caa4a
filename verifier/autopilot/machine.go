package autopilot

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rotation"
)

// Env is what a step reads and changes. The auditor's implementation
// (env.go) calls Vault with the rotation identity, etcd read-only, the API
// servers' metrics, and the API server for re-encryption; tests use a fake.
type Env interface {
	// Key reads the Transit key.
	Key(ctx context.Context, s Settings) (keysource.TransitKey, error)
	// Rotate rotates the Transit key.
	Rotate(ctx context.Context, s Settings) error
	// SetMinDecryption raises the key's min_decryption_version to to,
	// refusing with transitkey.ErrKeyChanged when the key's latest version
	// is no longer latest, and never lowering it.
	SetMinDecryption(ctx context.Context, s Settings, latest, to int) (transitkey.Trim, error)
	// Preflight checks, before rotating, that the scan can prove anything:
	// the prefix holds namespaces/default, the key is the one the auditor
	// scans, and etcd holds at least one value under it.
	Preflight(ctx context.Context, s Settings, tk keysource.TransitKey) error
	// APIServers is the API server gate at this moment for tk's latest
	// key_id.
	APIServers(ctx context.Context, s Settings, tk keysource.TransitKey) error
	// Reencrypt rewrites every stale object of the encrypted resources
	// through the API server at s.QPS.
	Reencrypt(ctx context.Context, s Settings, tk keysource.TransitKey) (ReencryptResult, error)
	// Verify scans the whole prefix: no value of the key below to.
	Verify(ctx context.Context, s Settings, tk keysource.TransitKey, to int) error
	// TrimGates checks every gate of trim (API servers, whole-prefix scan,
	// API servers again) for raising min_decryption_version to to.
	TrimGates(ctx context.Context, s Settings, tk keysource.TransitKey, to int) error
}

// ReencryptResult sums a re-encryption.
type ReencryptResult struct {
	Stale, Rewritten, Gone, Failed int
	Errors                         []string
}

// Event is one Kubernetes event a step asks for.
type Event struct {
	Type, Reason, Action, Note string
}

// Outcome is a step's result: the status to persist, the events to emit
// once it is persisted, and when to step again (0: only on a change of the
// policy).
type Outcome struct {
	Status  v1alpha1.RotationPolicyStatus
	Events  []Event
	Requeue time.Duration
}

// Machine steps RotationPolicies.
type Machine struct {
	Env   Env
	Clock clock.PassiveClock
}

// step carries one step's working state.
type step struct {
	m   *Machine
	p   *v1alpha1.RotationPolicy
	s   Settings
	st  v1alpha1.RotationPolicyStatus
	now time.Time
	out Outcome
}

// Step advances p by at most one action with a side effect (a rotation,
// a re-encryption, a trim), always after the stage that leads to it was
// persisted: the caller must persist Outcome.Status before stepping again.
func (m *Machine) Step(ctx context.Context, p *v1alpha1.RotationPolicy) Outcome {
	st := *p.Status.DeepCopy()
	x := &step{m: m, p: p, s: SettingsOf(p.Spec), st: st, now: m.Clock.Now()}
	x.run(ctx)
	x.st.ObservedGeneration = p.Generation
	x.out.Status = x.st
	return x.out
}

// Stop is a failed gate found outside Step (a duplicate policy, say).
func (m *Machine) Stop(p *v1alpha1.RotationPolicy, reason string, err error) Outcome {
	x := &step{m: m, p: p, s: SettingsOf(p.Spec), st: *p.Status.DeepCopy(), now: m.Clock.Now()}
	if x.st.Stage != v1alpha1.StageStopped || stoppedReason(x.st) != reason {
		x.stop(reason, err)
	}
	x.st.ObservedGeneration = p.Generation
	x.out.Status = x.st
	return x.out
}

func stoppedReason(st v1alpha1.RotationPolicyStatus) string {
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStopped); c != nil && c.Status == metav1.ConditionTrue {
		return c.Reason
	}
	return ""
}

func (x *step) run(ctx context.Context) {
	if x.st.Stage == "" {
		x.st.Stage = v1alpha1.StageIdle
		x.st.StageTime = x.mt()
	}
	wasSuspended := false
	if c := meta.FindStatusCondition(x.st.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason == v1alpha1.ReasonSuspended {
		wasSuspended = true
	}
	if x.p.Spec.Suspend {
		msg := fmt.Sprintf("suspended at stage %s: clear spec.suspend to go on", x.st.Stage)
		x.set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSuspended, msg)
		x.set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonSuspended, msg)
		// A stopped policy stays stopped, with its reason, while suspended.
		if x.st.Stage != v1alpha1.StageStopped {
			x.set(v1alpha1.ConditionStopped, metav1.ConditionFalse, v1alpha1.ReasonNotStopped, "no gate has failed")
		}
		return
	}
	if wasSuspended && x.st.Stage != v1alpha1.StageStopped {
		// A stage's clock (the API server wait's timeout) counts only the
		// time it ran: a suspension longer than the timeout stopped the
		// cycle at its first check after being cleared.
		x.st.StageTime = x.mt()
	}
	if x.st.Stage == v1alpha1.StageStopped {
		if !ShouldResume(x.p) {
			return
		}
		reason := stoppedReason(x.st)
		to := ResumeStage(x.st.StoppedStage, reason)
		if reason == v1alpha1.ReasonGateKeyChanged {
			// Take the key as it is now (the API server wait reads it):
			// a new target, with nothing re-encrypted or verified for it.
			x.st.TargetVersion = 0
			x.st.Reencrypted, x.st.VerifiedTime = 0, nil
		}
		x.st.ResumedWith = x.p.Annotations[v1alpha1.ResumeAnnotation]
		x.st.StoppedStage = ""
		x.event(corev1.EventTypeNormal, v1alpha1.ReasonResumed, "Resume", fmt.Sprintf("resumed by the operator at stage %s", to))
		x.enter(to, "resumed")
		x.out.Requeue = time.Millisecond
		return
	}
	switch x.st.Stage {
	case v1alpha1.StageIdle, v1alpha1.StageDone:
		x.idle(ctx)
	case v1alpha1.StageRotating:
		x.rotating(ctx)
	case v1alpha1.StageWaitingForAPIServers:
		x.waitAPIServers(ctx)
	case v1alpha1.StageReencrypting:
		x.reencrypt(ctx)
	case v1alpha1.StageVerifying:
		x.verify(ctx)
	case v1alpha1.StageWaitingToTrim:
		x.waitTrim()
	case v1alpha1.StageTrimming:
		x.trim(ctx)
	default:
		x.stop(v1alpha1.ReasonGateKeyChanged, fmt.Errorf("unknown stage %q in status", x.st.Stage))
	}
}

func (x *step) mt() *metav1.Time { t := metav1.NewTime(x.now); return &t }

// key reads the Transit key and records its versions; ok is false when the
// step must end (an error to retry).
func (x *step) key(ctx context.Context) (keysource.TransitKey, bool) {
	tk, err := x.m.Env.Key(ctx, x.s)
	if err != nil {
		x.retry(fmt.Errorf("read transit key %s/%s: %w", x.s.Mount, x.s.Key, err))
		return tk, false
	}
	x.st.CurrentVersion, x.st.MinDecryptionVersion = tk.LatestVersion, max(1, tk.MinDecryption)
	return tk, true
}

// onTarget reads the key and stops the cycle when its latest version is no
// longer the one this cycle works on (rotated or recreated by someone
// else); a target of 0 (after a resume) takes the latest.
func (x *step) onTarget(ctx context.Context) (keysource.TransitKey, bool) {
	tk, ok := x.key(ctx)
	if !ok {
		return tk, false
	}
	if x.st.TargetVersion == 0 {
		// The cycle adopts the latest version as its rotation: the next
		// one is due rotateEvery after that version was made, not after
		// the last rotation this policy made itself.
		x.st.TargetVersion = tk.LatestVersion
		if c, ok := tk.Versions[tk.LatestVersion]; ok && !c.IsZero() {
			t := metav1.NewTime(c)
			x.st.LastRotationTime = &t
		}
	}
	if tk.LatestVersion != x.st.TargetVersion {
		x.stop(v1alpha1.ReasonGateKeyChanged, fmt.Errorf("the key's latest version is %d, but this cycle works on version %d", tk.LatestVersion, x.st.TargetVersion))
		return tk, false
	}
	return tk, true
}

func (x *step) idle(ctx context.Context) {
	tk, ok := x.key(ctx)
	if !ok {
		return
	}
	next := x.scheduleNext(tk)
	if x.now.Before(next) {
		x.out.Requeue = min(next.Sub(x.now), IdleRecheck)
		reason := v1alpha1.ReasonIdle
		if x.st.Stage == v1alpha1.StageDone {
			reason = v1alpha1.ReasonCycleDone
		}
		x.conditions(metav1.ConditionTrue, reason, fmt.Sprintf("version %d is current; next rotation due at %s", tk.LatestVersion, next.UTC().Format(time.RFC3339)), metav1.ConditionFalse)
		return
	}
	if err := x.m.Env.Preflight(ctx, x.s, tk); err != nil {
		x.gateOrRetry(err, "before rotating")
		return
	}
	if Unfinished(tk.LatestVersion, tk.MinDecryption) {
		// Someone rotated without trimming: finish that rotation rather
		// than stack another on it.
		x.st.TargetVersion = tk.LatestVersion
		x.st.LastRotationTime = x.mt()
		x.st.Reencrypted, x.st.VerifiedTime = 0, nil
		x.event(corev1.EventTypeNormal, v1alpha1.ReasonAdoptedRotation, "Rotate", fmt.Sprintf("versions %d..%d still decrypt: finishing the rotation to version %d instead of rotating again", max(1, tk.MinDecryption), tk.LatestVersion-1, tk.LatestVersion))
		x.enter(v1alpha1.StageWaitingForAPIServers, fmt.Sprintf("waiting for every API server to report version %d", tk.LatestVersion))
		x.out.Requeue = time.Millisecond
		return
	}
	// Persist the target before rotating: a restart after the rotation
	// finds latest == target and does not rotate again.
	x.st.TargetVersion = tk.LatestVersion + 1
	x.st.Reencrypted, x.st.VerifiedTime = 0, nil
	x.enter(v1alpha1.StageRotating, fmt.Sprintf("rotating %s/%s from version %d to %d", x.s.Mount, x.s.Key, tk.LatestVersion, tk.LatestVersion+1))
	x.out.Requeue = time.Millisecond
}

func (x *step) rotating(ctx context.Context) {
	tk, ok := x.key(ctx)
	if !ok {
		return
	}
	switch {
	case x.st.TargetVersion > 0 && tk.LatestVersion >= x.st.TargetVersion:
		// Rotated already, by this cycle before its status was written
		// (a restart, a failed write): the event it could not give then.
		if x.p.Status.CurrentVersion < x.st.TargetVersion {
			x.event(corev1.EventTypeNormal, v1alpha1.ReasonRotated, "Rotate", fmt.Sprintf("rotated %s/%s to version %d (recorded late: the status write after the rotation did not happen)", x.s.Mount, x.s.Key, tk.LatestVersion))
		}
	case tk.LatestVersion == x.st.TargetVersion-1:
		if err := x.m.Env.Rotate(ctx, x.s); err != nil {
			switch vault.Classify(err) {
			case vault.KindDenied, vault.KindInvalid, vault.KindNotFound:
				x.stop(v1alpha1.ReasonGateVaultRotate, fmt.Errorf("vault refused to rotate %s/%s: %s", x.s.Mount, x.s.Key, vault.Describe(err)))
			default:
				x.retry(fmt.Errorf("rotate %s/%s: %s", x.s.Mount, x.s.Key, vault.Describe(err)))
			}
			return
		}
		if tk, ok = x.key(ctx); !ok {
			return
		}
		x.event(corev1.EventTypeNormal, v1alpha1.ReasonRotated, "Rotate", fmt.Sprintf("rotated %s/%s to version %d", x.s.Mount, x.s.Key, tk.LatestVersion))
	default:
		x.stop(v1alpha1.ReasonGateKeyChanged, fmt.Errorf("the key's latest version is %d; this cycle was to rotate to %d", tk.LatestVersion, x.st.TargetVersion))
		return
	}
	x.st.TargetVersion = tk.LatestVersion
	if c, ok := tk.Versions[tk.LatestVersion]; ok && !c.IsZero() {
		t := metav1.NewTime(c)
		x.st.LastRotationTime = &t
	} else {
		x.st.LastRotationTime = x.mt()
	}
	x.enter(v1alpha1.StageWaitingForAPIServers, fmt.Sprintf("waiting for every API server to report version %d for %s", tk.LatestVersion, x.s.Settle))
	x.out.Requeue = APIServerPoll
}

func (x *step) waitAPIServers(ctx context.Context) {
	tk, ok := x.onTarget(ctx)
	if !ok {
		return
	}
	since := x.now
	if x.st.StageTime != nil {
		since = x.st.StageTime.Time
	}
	err := x.m.Env.APIServers(ctx, x.s, tk)
	if err != nil && rotation.GateOf(err) == "" {
		err = rotation.Refuse(rotation.GateAPIServers, err)
	}
	switch WaitAPIServers(err, since, x.s.Timeout, x.now) {
	case GatePass:
		x.enter(v1alpha1.StageReencrypting, fmt.Sprintf("every API server reports version %d; re-encrypting stale objects at %g/s", tk.LatestVersion, x.s.QPS))
		x.out.Requeue = time.Millisecond
	case GateStop:
		x.stop(v1alpha1.ReasonGateAPIServers, fmt.Errorf("not every API server reported version %d for %s within %s: %w", tk.LatestVersion, x.s.Settle, x.s.Timeout, err))
	default:
		x.conditions(metav1.ConditionTrue, string(x.st.Stage), "waiting: "+err.Error(), metav1.ConditionTrue)
		x.out.Requeue = APIServerPoll
	}
}

func (x *step) reencrypt(ctx context.Context) {
	tk, ok := x.onTarget(ctx)
	if !ok {
		return
	}
	res, err := x.m.Env.Reencrypt(ctx, x.s, tk)
	x.st.Reencrypted += res.Rewritten
	if err != nil {
		x.gateOrRetry(err, "re-encrypting")
		return
	}
	if res.Failed > 0 {
		x.stop(v1alpha1.ReasonGateReencrypt, fmt.Errorf("%d of %d stale objects could not be rewritten through the API server: %s", res.Failed, res.Stale, strings.Join(res.Errors, "; ")))
		return
	}
	x.enter(v1alpha1.StageVerifying, fmt.Sprintf("rewrote %d stale objects (%d gone meanwhile); scanning the whole prefix", res.Rewritten, res.Gone))
	x.out.Requeue = time.Millisecond
}

func (x *step) verify(ctx context.Context) {
	tk, ok := x.onTarget(ctx)
	if !ok {
		return
	}
	if err := x.m.Env.Verify(ctx, x.s, tk, x.st.TargetVersion); err != nil {
		x.gateOrRetry(err, "verifying")
		return
	}
	x.st.VerifiedTime = x.mt()
	x.enter(v1alpha1.StageWaitingToTrim, fmt.Sprintf("nothing in etcd needs a version below %d; trimming after %s", x.st.TargetVersion, x.s.TrimAfter))
	_, left := TrimDue(x.now, x.s.TrimAfter, x.now)
	x.out.Requeue = max(left, time.Millisecond)
}

// enter moves to stage with an event and the matching conditions.
func (x *step) enter(stage v1alpha1.RotationStage, msg string) {
	x.st.Stage = stage
	x.st.StageTime = x.mt()
	x.event(corev1.EventTypeNormal, string(stage), "Stage", msg)
	switch stage {
	case v1alpha1.StageIdle:
		x.conditions(metav1.ConditionTrue, v1alpha1.ReasonIdle, msg, metav1.ConditionFalse)
	case v1alpha1.StageDone:
		x.conditions(metav1.ConditionTrue, v1alpha1.ReasonCycleDone, msg, metav1.ConditionFalse)
	default:
		x.conditions(metav1.ConditionTrue, string(stage), msg, metav1.ConditionTrue)
	}
}

// stop ends the cycle at a failed gate: stage Stopped, the conditions
// naming the gate and the fix, a Warning event. Nothing is trimmed.
func (x *step) stop(reason string, err error) {
	if x.st.Stage != v1alpha1.StageStopped {
		x.st.StoppedStage = x.st.Stage
	}
	x.st.Stage = v1alpha1.StageStopped
	x.st.StageTime = x.mt()
	msg := fmt.Sprintf("stopped at %s: %v; fix: %s", x.st.StoppedStage, err, Fix(reason, x.p.Name, x.s))
	x.event(corev1.EventTypeWarning, reason, "Stop", msg)
	x.set(v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
	x.set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, msg)
	x.set(v1alpha1.ConditionStopped, metav1.ConditionTrue, reason, msg)
	x.out.Requeue = 0
}

// gateOrRetry stops on a gate's refusal and retries anything else (etcd,
// Vault or the API server could not be read: no proof either way).
func (x *step) gateOrRetry(err error, when string) {
	if r := ReasonOf(err); r != "" {
		x.stop(r, fmt.Errorf("%s: %w", when, err))
		return
	}
	x.retry(fmt.Errorf("%s: %w", when, err))
}

// retry keeps the stage and steps again after RetryAfter.
func (x *step) retry(err error) {
	msg := fmt.Sprintf("retrying in %s: %v", RetryAfter, err)
	if c := meta.FindStatusCondition(x.st.Conditions, v1alpha1.ConditionProgressing); c == nil || c.Reason != v1alpha1.ReasonRetrying || c.Message != msg {
		x.event(corev1.EventTypeWarning, v1alpha1.ReasonRetrying, "Retry", msg)
	}
	x.set(v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRetrying, msg)
	x.out.Requeue = RetryAfter
}

func (x *step) conditions(ready metav1.ConditionStatus, reason, msg string, progressing metav1.ConditionStatus) {
	x.set(v1alpha1.ConditionReady, ready, reason, msg)
	x.set(v1alpha1.ConditionProgressing, progressing, reason, msg)
	x.set(v1alpha1.ConditionStopped, metav1.ConditionFalse, v1alpha1.ReasonNotStopped, "no gate has failed")
}

func (x *step) set(typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&x.st.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: truncate(msg),
		ObservedGeneration: x.p.Generation, LastTransitionTime: metav1.NewTime(x.now)})
}

func (x *step) event(typ, reason, action, note string) {
	x.out.Events = append(x.out.Events, Event{Type: typ, Reason: reason, Action: action, Note: truncate(note)})
}

// truncate keeps a message within what conditions and events accept.
func truncate(s string) string {
	const maxLen = 1000
	if len(s) > maxLen {
		return s[:maxLen-3] + "..."
	}
	return s
}

// scheduleNext records in status when the next rotation is due, from the
// last rotation (or the latest version's creation), and returns it.
func (x *step) scheduleNext(tk keysource.TransitKey) time.Time {
	var last *time.Time
	if x.st.LastRotationTime != nil {
		last = &x.st.LastRotationTime.Time
	}
	next := NextRotation(last, tk.Versions[tk.LatestVersion], x.s.RotateEvery)
	nt := metav1.NewTime(next)
	x.st.NextRotationTime = &nt
	return next
}
