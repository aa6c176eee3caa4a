package autopilot

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// waitTrim waits trimAfter once the cycle is verified.
func (x *step) waitTrim() {
	verified := x.now
	if x.st.VerifiedTime != nil {
		verified = x.st.VerifiedTime.Time
	}
	due, left := TrimDue(verified, x.s.TrimAfter, x.now)
	if !due {
		x.out.Requeue = min(left, IdleRecheck)
		x.conditions(metav1.ConditionTrue, string(x.st.Stage), fmt.Sprintf("trimming to version %d at %s", x.st.TargetVersion, verified.Add(x.s.TrimAfter).UTC().Format(time.RFC3339)), metav1.ConditionTrue)
		return
	}
	x.enter(v1alpha1.StageTrimming, fmt.Sprintf("checking every gate before raising min_decryption_version to %d", x.st.TargetVersion))
	x.out.Requeue = time.Millisecond
}

// trim raises min_decryption_version to the cycle's version when every
// gate passes in the same step, and finishes the cycle.
func (x *step) trim(ctx context.Context) {
	tk, ok := x.onTarget(ctx)
	if !ok {
		return
	}
	to := x.st.TargetVersion
	// from is the value a Trimmed event's undo restores; 0 gives none.
	from := 0
	if tk.MinDecryption < to {
		if err := x.m.Env.TrimGates(ctx, x.s, tk, to); err != nil {
			x.gateOrRetry(err, "before trimming")
			return
		}
		done, err := x.m.Env.SetMinDecryption(ctx, x.s, tk.LatestVersion, to)
		if errors.Is(err, transitkey.ErrKeyChanged) {
			x.stop(v1alpha1.ReasonGateKeyChanged, err)
			return
		}
		if err != nil {
			switch vault.Classify(err) {
			case vault.KindDenied, vault.KindInvalid, vault.KindNotFound:
				x.stop(v1alpha1.ReasonGateVaultTrim, fmt.Errorf("vault refused to set min_decryption_version of %s/%s: %s", x.s.Mount, x.s.Key, vault.Describe(err)))
			default:
				x.retry(fmt.Errorf("set min_decryption_version: %s", vault.Describe(err)))
			}
			return
		}
		if done.Raised {
			from = done.From
		}
		// Raised by hand meanwhile to to or beyond: left as it is.
		to = max(to, done.From)
	}
	if recorded := x.p.Status.MinDecryptionVersion; from == 0 && recorded > 0 && recorded < to {
		// Vault holds a trim this policy's status never recorded: its
		// own, whose status write failed, or one made by hand. The undo
		// an operator needs to restore an older etcd backup is given now.
		from = recorded
	}
	if from > 0 {
		x.event(corev1.EventTypeNormal, v1alpha1.ReasonTrimmed, "Trim", fmt.Sprintf("raised min_decryption_version of %s/%s from %d to %d; undo: vault write %s/keys/%s/config min_decryption_version=%d (etcd backups from before the re-encryption need that undo to be restored)",
			x.s.Mount, x.s.Key, from, to, x.s.Mount, x.s.Key, from))
	}
	x.st.MinDecryptionVersion = to
	x.st.LastTrimTime = x.mt()
	next := x.scheduleNext(tk)
	x.enter(v1alpha1.StageDone, fmt.Sprintf("rotation to version %d finished; next rotation due at %s", to, next.UTC().Format(time.RFC3339)))
	x.out.Requeue = max(min(next.Sub(x.now), IdleRecheck), time.Millisecond)
}
