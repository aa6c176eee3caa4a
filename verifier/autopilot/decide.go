// Package autopilot is the state machine behind RotationPolicy: inside
// vaultkms-auditor it rotates a Transit key when due, waits until every API
// server reports the new key_id, re-encrypts what is stale through the API
// server, verifies the whole etcd prefix, waits trimAfter, and trims behind
// the same gates as `kubectl vaultkms trim` (verifier/gates). Any failed
// gate stops the cycle until the operator resumes it.
//
// This file holds the pure decisions (every one table-tested with a fake
// clock); machine.go applies them one stage per step; reconciler.go
// persists each step in the policy's status before the next one acts, so a
// restart or a new leader resumes at the right stage without rotating twice.
package autopilot

import (
	"fmt"
	"time"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/apiservers"
	"github.com/vaultkms/vaultkms/verifier/rotation"
)

// Defaults for the optional fields of a RotationPolicy.
const (
	DefaultTrimAfter = 24 * time.Hour
	DefaultSettle    = apiservers.DefaultSettle
	DefaultTimeout   = 15 * time.Minute
	DefaultQPS       = 20
	// APIServerPoll is how often the API server gate is read while waiting.
	APIServerPoll = 5 * time.Second
	// RetryAfter is the wait after an error reading etcd, Vault or the API
	// server (not a gate refusal, which stops the cycle).
	RetryAfter = 30 * time.Second
	// IdleRecheck bounds the wait while idle, so a key rotated or trimmed
	// by hand shows in the status.
	IdleRecheck = 10 * time.Minute
)

// Settings are a RotationPolicy's spec with the defaults applied.
type Settings struct {
	Mount, Key, Namespace, Provider string
	RotateEvery, TrimAfter          time.Duration
	Settle, Timeout                 time.Duration
	QPS                             float64
	Burst                           int
	MetricsURLs                     []string
}

// SettingsOf applies the defaults to spec.
func SettingsOf(spec v1alpha1.RotationPolicySpec) Settings {
	s := Settings{Mount: spec.Transit.Mount, Key: spec.Transit.Key, Namespace: spec.Transit.Namespace, Provider: spec.Provider,
		RotateEvery: spec.RotateEvery.Duration, TrimAfter: DefaultTrimAfter, Settle: DefaultSettle, Timeout: DefaultTimeout,
		QPS: DefaultQPS, Burst: 1, MetricsURLs: spec.APIServers.MetricsURLs}
	// The spelling the plugin records, for the key_id, Vault paths and
	// messages alike.
	s.Mount = transitkey.NormalizeMount(s.Mount)
	s.Namespace = transitkey.NormalizeNamespace(s.Namespace)
	if s.Mount == "" {
		s.Mount = "transit"
	}
	if s.Provider == "" {
		s.Provider = "vault"
	}
	if spec.TrimAfter != nil {
		s.TrimAfter = spec.TrimAfter.Duration
	}
	if spec.APIServers.SettleTime != nil {
		s.Settle = spec.APIServers.SettleTime.Duration
	}
	if spec.APIServers.Timeout != nil {
		s.Timeout = spec.APIServers.Timeout.Duration
	}
	if spec.Reencrypt.QPS > 0 {
		s.QPS = float64(spec.Reencrypt.QPS)
	}
	if spec.Reencrypt.Burst > 0 {
		s.Burst = int(spec.Reencrypt.Burst)
	}
	return s
}

// NextRotation is when the next rotation is due: rotateEvery after the
// policy's last rotation, or, before its first, after the creation of the
// key's latest version (a key rotated by hand a day ago is a day old).
func NextRotation(last *time.Time, latestCreated time.Time, every time.Duration) time.Time {
	from := latestCreated
	if last != nil && last.After(from) {
		from = *last
	}
	return from.Add(every)
}

// Unfinished tells whether the key still has versions below its latest
// that can decrypt: a rotation (by hand, or one this policy lost track of)
// was not trimmed. The autopilot finishes it instead of rotating again.
func Unfinished(latest, minDecryption int) bool { return latest > max(1, minDecryption) }

// GateVerdict is what the API server gate's answer means while waiting.
type GateVerdict int

const (
	GatePass GateVerdict = iota
	GateWait
	GateStop
)

// WaitAPIServers decides the wait for every API server: pass when the gate
// passed, stop once timeout has passed since the wait began, else wait.
func WaitAPIServers(gateErr error, since time.Time, timeout time.Duration, now time.Time) GateVerdict {
	switch {
	case gateErr == nil:
		return GatePass
	case now.Sub(since) >= timeout:
		return GateStop
	default:
		return GateWait
	}
}

// TrimDue tells whether trimAfter has passed since the verification, and
// how long is left.
func TrimDue(verified time.Time, trimAfter time.Duration, now time.Time) (bool, time.Duration) {
	left := verified.Add(trimAfter).Sub(now)
	return left <= 0, max(left, 0)
}

// ShouldResume tells whether a Stopped policy was resumed by the operator:
// the resume annotation has a value not yet acted on, or the spec changed
// (which includes setting and clearing suspend).
func ShouldResume(p *v1alpha1.RotationPolicy) bool {
	if p.Status.Stage != v1alpha1.StageStopped {
		return false
	}
	if v := p.Annotations[v1alpha1.ResumeAnnotation]; v != "" && v != p.Status.ResumedWith {
		return true
	}
	return p.Generation != p.Status.ObservedGeneration
}

// ResumeStage is where a cycle stopped at stopped, for reason, continues.
// The gates of that stage run again in full; a failed verification
// re-encrypts first (the operator fixed the objects or the RBAC that kept
// them stale). After KeyChanged the cycle's target is the key's latest
// version as it is now, which no API server has been seen to use and
// nothing has been re-encrypted to: the cycle starts again from the API
// server wait, whatever stage it stopped in. Resuming there at the stopped
// stage skipped that wait, re-encrypted while the API servers still wrote
// the old version, and stopped again at the trim gates (or, from Rotating,
// at once, with no target to rotate to).
func ResumeStage(stopped v1alpha1.RotationStage, reason string) v1alpha1.RotationStage {
	if reason == v1alpha1.ReasonGateKeyChanged {
		return v1alpha1.StageWaitingForAPIServers
	}
	switch stopped {
	case "", v1alpha1.StageIdle, v1alpha1.StageDone:
		return v1alpha1.StageIdle
	case v1alpha1.StageVerifying:
		return v1alpha1.StageReencrypting
	case v1alpha1.StageWaitingToTrim:
		return v1alpha1.StageTrimming
	}
	return stopped
}

// GateKeyMismatch refuses a policy whose key is not the one the auditor
// scans: its evidence would be about another key.
const GateKeyMismatch rotation.Gate = "KeyMismatch"

// ReasonOf names, as a condition reason, the gate a refusal came from.
func ReasonOf(err error) string {
	switch rotation.GateOf(err) {
	case rotation.GateAPIServers:
		return v1alpha1.ReasonGateAPIServers
	case rotation.GatePrefix:
		return v1alpha1.ReasonGatePrefix
	case rotation.GateNoEvidence:
		return v1alpha1.ReasonGateNoEvidence
	case rotation.GateUnreadable:
		return v1alpha1.ReasonGateUnreadable
	case rotation.GateStale:
		return v1alpha1.ReasonGateStaleRemain
	case rotation.GateNothing:
		return v1alpha1.ReasonGateNothingToTrim
	case rotation.GateVersion:
		return v1alpha1.ReasonGateKeyChanged
	case GateKeyMismatch:
		return v1alpha1.ReasonGateKeyMismatch
	}
	return ""
}

// Fix is what the operator should do about a stop with reason, then how to
// resume. name is the policy's name.
func Fix(reason, name string, s Settings) string {
	resume := fmt.Sprintf("then resume with `kubectl annotate rotationpolicy %s %s=$(date +%%s) --overwrite`", name, v1alpha1.ResumeAnnotation)
	var fix string
	switch reason {
	case v1alpha1.ReasonGateAPIServers:
		fix = "make every API server's plugin healthy and on the new key_id (`kubectl vaultkms status` lists them), or correct spec.apiServers.metricsURLs"
	case v1alpha1.ReasonGatePrefix, v1alpha1.ReasonGateNoEvidence:
		fix = "check the auditor's --etcd-endpoints and --etcd-prefix, and that spec.transit names the key the plugin uses"
	case v1alpha1.ReasonGateUnreadable:
		fix = "find the values with `kubectl vaultkms verify --whole-prefix` and repair or delete them"
	case v1alpha1.ReasonGateStaleRemain:
		fix = "find them with `kubectl vaultkms verify --whole-prefix`, re-encrypt them (`kubectl vaultkms reencrypt --resources ...`) or give the auditor update on their resource"
	case v1alpha1.ReasonGateReencrypt:
		fix = "give the auditor get/list/update on the resources named (chart value auditor.rotation.resources) or repair the objects named"
	case v1alpha1.ReasonGateVaultRotate:
		fix = fmt.Sprintf("give the auditor's rotation identity update on %s/keys/%s/rotate (docs/rotation.md has the policy)", s.Mount, s.Key)
	case v1alpha1.ReasonGateVaultTrim:
		fix = fmt.Sprintf("give the auditor's rotation identity update on %s/keys/%s/config (docs/rotation.md has the policy)", s.Mount, s.Key)
	case v1alpha1.ReasonGateKeyChanged:
		fix = "the key was rotated, trimmed or recreated outside this policy; check it with `kubectl vaultkms status`"
	case v1alpha1.ReasonGateKeyMismatch:
		fix = "make spec.transit name the key the auditor scans (its --transit-key or plugin), or run an auditor for that key"
	case v1alpha1.ReasonGateDuplicate:
		fix = "delete one of the policies: one key has one policy"
	case v1alpha1.ReasonGateNothingToTrim:
		fix = "check the key with `kubectl vaultkms status`"
	default:
		fix = "read the message"
	}
	return fix + "; " + resume
}
