package syncer

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// Finalizer makes deletion wait until leases are revoked (or known ended).
const Finalizer = "secrets.vaultkms.io/revoke-leases"

// DefaultFinalizerTimeout is how long deletion waits for an unreachable
// Vault before the leases are left to end on their own.
const DefaultFinalizerTimeout = 10 * time.Minute

// finalizer revokes the journal's leases at deletion and lets the
// VaultSecret go. No finalizer outlives the leases it guards, nor
// Timeout: a namespace deleted during a Vault outage is not held for the
// leases' whole lives.
type finalizer struct {
	Client    client.Client
	APIReader client.Reader
	Vault     *vaultIO
	Secrets   *secretWriter
	Status    *statusRecorder
	Metrics   *Metrics
	Clock     interface{ Now() time.Time }
	Timeout   time.Duration
	// Slots bounds the namespace's passes calling Vault (nil: no bound).
	Slots *namespaceLimiter
	// forget is told the VaultSecret is gone.
	forget func(client.ObjectKey)
}

// FinalizeGiveUp tells whether deletion stops waiting for Vault at now.
func FinalizeGiveUp(now, deletedAt time.Time, timeout time.Duration) bool {
	if timeout <= 0 {
		timeout = DefaultFinalizerTimeout
	}
	return !now.Before(deletedAt.Add(timeout))
}

func (f *finalizer) finalize(ctx context.Context, vs *v1alpha1.VaultSecret) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vs, Finalizer) {
		return ctrl.Result{}, nil
	}
	now := f.Clock.Now()
	st := &vs.Status
	end := journalEnd(st)
	// Leases left to end on their own are told once the finalizer is
	// gone: a deletion retried (the Secret's delete or the finalizer's
	// removal failed) tries them again and would count them twice.
	var left leftLeases
	if DecideFinalize(now, len(allJournalIDs(st, now)) > 0, revokeOnDelete(vs), end) == FinalizeRelease {
		release, ok := f.Slots.tryAcquire(vs.Namespace)
		switch {
		case ok:
			defer release()
			res, wait, err := f.revokeAll(ctx, vs, now, end)
			if wait {
				return res.Result, err
			}
			left = res.left
		case !FinalizeGiveUp(now, vs.DeletionTimestamp.Time, f.Timeout):
			// The namespace's other passes hold every slot (its Vault calls
			// hang, most likely): try again shortly, as any pass would.
			return ctrl.Result{RequeueAfter: ThrottleDelay(jitterFor(string(vs.UID)))}, nil
		default:
			// Past --finalizer-timeout a deletion does not wait for a slot
			// either: the namespace goes, the leases end on their own.
			left = leftLeases{n: len(allJournalIDs(st, now)), why: "the namespace's Vault calls are all in flight past --finalizer-timeout"}
		}
	}
	if err := f.Secrets.deleteOwned(ctx, vs, targetName(vs)); err != nil {
		return ctrl.Result{}, err
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur v1alpha1.VaultSecret
		if err := f.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		if f.forget != nil {
			f.forget(client.ObjectKeyFromObject(vs))
		}
		if !controllerutil.RemoveFinalizer(&cur, Finalizer) {
			return nil
		}
		return client.IgnoreNotFound(f.Client.Update(ctx, &cur))
	})
	if err == nil {
		f.notRevoked(vs, left.n, left.why, end)
	}
	return ctrl.Result{}, err
}

// leftLeases are leases deletion leaves to end on their own, with the
// first reason.
type leftLeases struct {
	n   int
	why string
}

// revoked is what revokeAll came to.
type revoked struct {
	ctrl.Result
	left leftLeases
}

// revokeAll revokes the journal's leases, every one of them: a refusal of
// one (a policy that covers another source's path only) does not spare
// the others. While Vault is unreachable and --finalizer-timeout has not
// passed, it says to wait (and for how long); past it, or on any other
// failure, those leases are returned, to be reported as not revoked once
// deletion has gone through.
func (f *finalizer) revokeAll(ctx context.Context, vs *v1alpha1.VaultSecret, now, end time.Time) (revoked, bool, error) {
	st := &vs.Status
	left, why := 0, ""
	for _, l := range allJournalIDs(st, now) {
		err := f.Vault.release(ctx, vs, l)
		if err == nil {
			continue
		}
		if vault.Classify(err) == vault.KindUnavailable && !FinalizeGiveUp(now, vs.DeletionTimestamp.Time, f.Timeout) {
			if d := FinalizeRetryAfter(now, vs.DeletionTimestamp.Time, end); d > 0 {
				giveUp := vs.DeletionTimestamp.Add(f.timeout())
				orig := st.DeepCopy()
				f.Status.setReady(vs, metav1.ConditionFalse, ReasonVaultUnavailable, "cannot revoke the lease before deletion; retrying until "+formatTime(minTime(end, giveUp))+": "+explain(err))
				return revoked{Result: ctrl.Result{RequeueAfter: min(d, max(time.Second, giveUp.Sub(now)))}}, true, f.Status.write(ctx, vs, orig)
			}
		}
		if left == 0 {
			why = explain(err)
		}
		left++
	}
	return revoked{left: leftLeases{n: left, why: why}}, false, nil
}

// notRevoked reports n leases left to end on their own, with the first
// reason.
func (f *finalizer) notRevoked(vs *v1alpha1.VaultSecret, n int, why string, end time.Time) {
	if n <= 0 {
		return
	}
	if n == 1 {
		f.Status.event(vs, corev1.EventTypeWarning, "LeaseNotRevoked", "Revoke",
			"lease not revoked (%s); it ends on its own at %s", why, formatTime(end))
	} else {
		f.Status.event(vs, corev1.EventTypeWarning, "LeaseNotRevoked", "Revoke",
			"%d leases not revoked (the first: %s); they end on their own by %s", n, why, formatTime(end))
	}
	if f.Metrics != nil {
		f.Metrics.notRevoked.Add(float64(n))
	}
}

func (f *finalizer) timeout() time.Duration {
	if f.Timeout <= 0 {
		return DefaultFinalizerTimeout
	}
	return f.Timeout
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func revokeOnDelete(vs *v1alpha1.VaultSecret) bool {
	return vs.Spec.RevokeOnDelete == nil || *vs.Spec.RevokeOnDelete
}
