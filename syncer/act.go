package syncer

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// act carries out a plan: first the lease journal (promote, drop,
// revoke), then the one write of the plan, then status, written once.
func (r *Reconciler) act(ctx context.Context, o *observation, p Plan, now time.Time) (ctrl.Result, string, error) {
	vs := o.vs
	st := &vs.Status
	orig := st.DeepCopy()
	st.ObservedGeneration = vs.Generation
	if p.RecordWrite && o.Unrecorded != nil {
		r.Log.Info("recording a Secret write whose status write was lost", "vaultsecret", client.ObjectKeyFromObject(vs), "lastSync", formatTime(time.Unix(o.Unrecorded.LastSync, 0)))
		o.Unrecorded.restore(st, o.DataHMAC, targetName(vs), vs.Generation)
	}
	r.settleRestarts(ctx, vs)
	if st.SecretName != "" && st.SecretName != targetName(vs) {
		// spec.target.name changed: the old Secret is no longer wanted.
		if err := r.secrets.deleteOwned(ctx, vs, st.SecretName); err != nil {
			return ctrl.Result{}, "error", err
		}
		st.SecretName = ""
	}
	if err := r.applyJournals(ctx, o, p, now); err != nil {
		return r.failed(ctx, vs, orig, now, ReasonVaultUnavailable, err)
	}
	if p.AdoptHMAC && o.secret != nil {
		// The HMAC key was recreated: the data is taken as it is, not
		// treated as edited (no re-issue, no restart).
		st.DataHMAC = dataHMAC(r.HMACKey, o.secret.Data)
	}
	if p.MarkApplied {
		st.AppliedGeneration = vs.Generation
	}

	switch p.Action {
	case ActInvalid:
		return r.failed(ctx, vs, orig, now, invalidReason(o.Invalid), o.Invalid)
	case ActConflict:
		r.status.setReady(vs, metav1.ConditionFalse, ReasonConflict, fmt.Sprintf("Secret %q exists and is not managed by this VaultSecret; delete it, set spec.target.name, or set spec.target.adopt to take it over (only a Secret no other VaultSecret controls)", targetName(vs)))
		return requeueAt(now, p.WakeAt), "conflict", r.status.write(ctx, vs, orig)
	case ActFetch, ActRenew:
		if len(vs.Spec.Sources) > 0 {
			return r.syncSources(ctx, o, p, orig, now)
		}
		if p.Action == ActRenew {
			return r.renew(ctx, o, p, orig, now)
		}
		return r.fetchAndWrite(ctx, o, p, orig, now)
	case ActWriteMetadata:
		if err := r.writeMetadata(ctx, o); err != nil {
			return r.failed(ctx, vs, orig, now, ReasonSecretWrite, err)
		}
		st.MetadataHash = o.MetadataHash
		if !p.MarkApplied && st.SourceHash == o.SourceHash {
			st.AppliedGeneration = vs.Generation
		}
		return requeueAt(now, p.WakeAt), "synced", r.status.write(ctx, vs, orig)
	}
	return requeueAt(now, p.WakeAt), "unchanged", r.status.write(ctx, vs, orig)
}

// newData tells that the Secret got data new to it from Vault, and asks
// for the rollout restarts that bring it to the pods. Status records that
// they are owed, in the write that records the data, so that a controller
// ended before carrying them out leaves them to the next.
func (r *Reconciler) newData(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time) {
	r.status.event(vs, corev1.EventTypeNormal, "Rotated", "Rotate", "Secret %q has new data from Vault", targetName(vs))
	since := restartOwedAt(vs, true, now)
	if since.IsZero() {
		return
	}
	vs.Status.RestartPendingSince = ptrTime(since)
	r.restarts.request(ctx, vs, since)
}

// RestartStep is what a pass does about status.restartPendingSince.
type RestartStep int

const (
	// RestartKeep: nothing pending, or this process is carrying it out.
	RestartKeep RestartStep = iota
	// RestartClear: every restart for the pending data ended, or no
	// target is left to restart.
	RestartClear
	// RestartResume: pending, and this process was never asked: the
	// process that wrote it ended first; ask again.
	RestartResume
)

// DecideRestart maps what status records and what the restarter knows to
// a step.
func DecideRestart(pending bool, targets int, known RestartState) RestartStep {
	switch {
	case !pending:
		return RestartKeep
	case targets == 0 || known == RestartSettled:
		return RestartClear
	case known == RestartUnknown:
		return RestartResume
	}
	return RestartKeep
}

// settleRestarts carries out the pass's RestartStep. What the restarter
// knows of settled restarts is dropped only once status says none is
// pending, that is once the write clearing the field has landed: were it
// dropped with the clearing, a lost status write would leave the field set
// and the next pass, finding nothing known, would restart every target
// again.
func (r *Reconciler) settleRestarts(ctx context.Context, vs *v1alpha1.VaultSecret) {
	st := &vs.Status
	key := client.ObjectKeyFromObject(vs)
	if st.RestartPendingSince == nil {
		r.restarts.forgetSettled(key)
		return
	}
	since := st.RestartPendingSince.Time
	switch DecideRestart(true, len(vs.Spec.RolloutRestartTargets), r.restarts.state(key, since)) {
	case RestartClear:
		st.RestartPendingSince = nil
		if len(vs.Spec.RolloutRestartTargets) == 0 {
			// No target left: nothing queued is owed any more.
			r.restarts.forget(key)
		}
	case RestartResume:
		r.Log.Info("carrying out rollout restarts owed for new Secret data since before this controller started", "vaultsecret", key, "since", formatTime(since))
		r.restarts.request(ctx, vs, since)
	}
}

// applyJournals carries out the journal plans, spec.source's and then
// each of status.sources', by the same rules; a pending lease that cannot
// be dropped because Vault does not answer fails the pass. Journals of
// removed sources go from status once they name no lease.
func (r *Reconciler) applyJournals(ctx context.Context, o *observation, p Plan, now time.Time) error {
	vs := o.vs
	st := &vs.Status
	recorded, promotedAny := st.DataHMAC, false
	if err := r.applyJournal(ctx, o, &st.LeaseJournal, p.JournalPlan, now); err != nil {
		return err
	}
	if p.Promote {
		r.promoted(o)
		promotedAny = true
	}
	for i, sp := range p.Sources {
		if i >= len(st.Sources) {
			break
		}
		if err := r.applyJournal(ctx, o, &st.Sources[i].LeaseJournal, sp.JournalPlan, now); err != nil {
			return err
		}
		if sp.Promote {
			r.promotedSource(o, i)
			promotedAny = true
		}
	}
	if promotedAny && o.secret != nil && recorded != "" && dataState(r.HMACKey, recorded, o.secret.Data) == DataEdited {
		// New credentials reached the Secret in an earlier pass whose
		// answer was lost (or whose process ended), which therefore never
		// asked for the restart: the pods still hold the old credentials,
		// which the promotion schedules for revocation.
		r.newData(ctx, vs, now)
	}
	n := len(st.Sources)
	for n > len(vs.Spec.Sources) && emptyJournal(&st.Sources[n-1].LeaseJournal) {
		n--
	}
	if n == 0 {
		st.Sources = nil
	} else {
		st.Sources = st.Sources[:n]
	}
	return nil
}

// applyJournal carries out one journal's plan: release the leases of a
// source that no longer leases, promote the pending lease the Secret
// holds, drop one it does not, and revoke a replaced lease when due.
func (r *Reconciler) applyJournal(ctx context.Context, o *observation, j *v1alpha1.LeaseJournal, jp JournalPlan, now time.Time) error {
	vs := o.vs
	if jp.ReleaseStale {
		if err := r.releaseStale(ctx, o, j, now); err != nil {
			r.Log.Info("revoking the lease of a source that no longer leases failed; retrying", "vaultsecret", client.ObjectKeyFromObject(vs), "error", explain(err))
		}
	}
	if jp.Promote {
		if older := promote(j, now, vs.Spec.RevokeGracePeriod); older.ID != "" {
			if err := r.vault.release(ctx, vs, older); err != nil {
				r.notReleased(o, err)
			}
		}
	}
	if jp.DropPending {
		err := r.vault.release(ctx, vs, leaseRef{j.PendingLease.ID, j.PendingLease.Vault})
		if err != nil && vault.Classify(err) == vault.KindUnavailable {
			return err
		}
		if err != nil {
			r.notReleased(o, err)
		}
		j.PendingLease = nil
	}
	r.handlePrevious(ctx, o, j, jp.Previous, now)
	return nil
}

// promoted records what the Secret holds once spec.source's pending lease
// is promoted: the write of an earlier pass whose answer was lost.
func (r *Reconciler) promoted(o *observation) {
	vs := o.vs
	st := &vs.Status
	l := st.Lease
	if o.secret != nil {
		st.DataHMAC = dataHMAC(r.HMACKey, o.secret.Data)
	}
	end := EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt))
	st.ExpiresAt, st.LastSyncTime, st.SecretName = ptrTime(end), ptrTime(l.IssuedAt.Time), targetName(vs)
	st.SourceHash, st.MetadataHash, st.AppliedGeneration = o.SourceHash, o.MetadataHash, vs.Generation
	r.status.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("Secret %q holds the current lease; expires at %s", targetName(vs), formatTime(end)))
}

// releaseStale revokes every lease of a journal whose source no longer
// leases.
func (r *Reconciler) releaseStale(ctx context.Context, o *observation, j *v1alpha1.LeaseJournal, now time.Time) error {
	for _, l := range journalIDs(j, now) {
		err := r.vault.release(ctx, o.vs, l)
		var elsewhere *issuedElsewhereError
		switch {
		case errors.As(err, &elsewhere):
			// Out of the journal at once: a later lease's failure keeps the
			// journal for the next pass, which must not tell this one again.
			dropLease(j, l.ID)
			r.notReleased(o, err)
		case err != nil && vault.Classify(err) != vault.KindDenied:
			return err
		}
	}
	*j = v1alpha1.LeaseJournal{}
	return nil
}

// handlePrevious revokes a replaced lease when due, with back-off on
// failure; it stops at the old lease's own end, and a refusal (403) is
// reported as a condition instead of retried.
func (r *Reconciler) handlePrevious(ctx context.Context, o *observation, j *v1alpha1.LeaseJournal, a PreviousAction, now time.Time) {
	vs := o.vs
	l := j.Lease
	switch {
	case l == nil || l.PreviousID == "" || a == PreviousWait:
		return
	case a == PreviousForget:
		r.Log.Info("replaced lease ended before it could be revoked", "vaultsecret", client.ObjectKeyFromObject(vs))
		clearPrevious(j)
		return
	}
	err := r.vault.release(ctx, vs, leaseRef{l.PreviousID, l.PreviousVault})
	var elsewhere *issuedElsewhereError
	switch {
	case errors.As(err, &elsewhere):
		clearPrevious(j)
		r.status.setCondition(vs, ConditionPreviousRevoked, metav1.ConditionFalse, ReasonIssuedElsewhere, explain(err))
		r.notReleased(o, err)
	case err == nil:
		clearPrevious(j)
		r.status.setCondition(vs, ConditionPreviousRevoked, metav1.ConditionTrue, "Revoked", "the replaced lease was revoked")
	case vault.Classify(err) == vault.KindDenied:
		clearPrevious(j)
		msg := "Vault refused to revoke the replaced lease; grant update on sys/leases/revoke/<mount>/<path>/* to the role's policy: " + explain(err)
		r.status.setCondition(vs, ConditionPreviousRevoked, metav1.ConditionFalse, ReasonPermissionDenied, msg)
		o.tellOnceWritten(func() { r.status.event(vs, corev1.EventTypeWarning, ReasonPermissionDenied, "Revoke", "%s", msg) })
	default:
		j.RevokeFailures++
		next := metav1.NewTime(now.Add(RevokeBackoff(j.RevokeFailures)))
		l.RevokePreviousAt = &next
		r.Log.Info("revoking a replaced lease failed; backing off", "vaultsecret", client.ObjectKeyFromObject(vs), "failures", j.RevokeFailures, "next", next.Time, "error", explain(err))
	}
}

// releaseReplaced revokes a lease no Secret holds any more (replaced
// twice within a grace period, or pending and never written) with the
// pass's token.
func (r *Reconciler) releaseReplaced(ctx context.Context, o *observation, tok *TenantToken, l leaseRef) {
	if err := r.vault.releaseRef(ctx, tok, l); err != nil {
		r.notReleased(o, err)
	}
}

// ReasonIssuedElsewhere: a replaced lease was issued by a Vault the
// connection no longer reaches; it is left to end on its own.
const ReasonIssuedElsewhere = "IssuedByAnotherVault"

// notReleased reports a lease left to end on its own when its release
// failed for good (it is logged only when Vault merely failed to answer,
// which the lease's own end makes good): a lease of a Vault the connection
// no longer reaches is told by event and counted, once the pass's
// status write has landed (see tellOnceWritten).
func (r *Reconciler) notReleased(o *observation, err error) {
	vs := o.vs
	var elsewhere *issuedElsewhereError
	if !errors.As(err, &elsewhere) {
		r.Log.Info("revoking a lease failed; it ends on its own", "vaultsecret", client.ObjectKeyFromObject(vs), "error", explain(err))
		return
	}
	msg := explain(err)
	o.tellOnceWritten(func() {
		r.status.event(vs, corev1.EventTypeWarning, "LeaseNotRevoked", "Revoke", "%s", msg)
		if r.Metrics != nil {
			r.Metrics.notRevoked.Inc()
		}
	})
}

// writeMetadata rewrites the Secret's labels and annotations around its
// current data: no Vault call, no new lease, no restart.
func (r *Reconciler) writeMetadata(ctx context.Context, o *observation) error {
	vs := o.vs
	held := currentLeases(vs)
	// The data is unchanged, and so is the record of the write that put
	// it there.
	w, err := r.secrets.apply(ctx, vs, o.secret.Data, timeOf(vs.Status.ExpiresAt), joinLeases(held), o.secret.Annotations[WriteRecordAnnotation], o.secret, false)
	if err == nil && !holdsAll(w.LeaseID, held) {
		return errors.New("the Secret read back does not name the current leases")
	}
	return err
}

// secretWriteFailed reports a failed Secret write, except a create that
// found a Secret of the target's name: nothing is reported then, and the
// pass comes back at once to read that Secret and decide on it.
func (r *Reconciler) secretWriteFailed(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, now time.Time, err error) (ctrl.Result, string, error) {
	if errors.Is(err, errTargetExists) {
		r.recheck.Store(client.ObjectKeyFromObject(vs), struct{}{})
		return ctrl.Result{Requeue: true}, "recheck", nil
	}
	return r.failed(ctx, vs, orig, now, ReasonSecretWrite, err)
}

// failedVault reports a Vault failure with the reason it maps to.
func (r *Reconciler) failedVault(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, now time.Time, err error) (ctrl.Result, string, error) {
	reason := ReasonVaultUnavailable
	var rd *renewDeniedError
	switch {
	case errors.As(err, &rd):
		reason = ReasonRenewDenied
	case errors.Is(err, errNotFound) || vault.Classify(err) == vault.KindNotFound:
		reason = ReasonNotFound
	case vault.Classify(err) == vault.KindDenied:
		reason = ReasonPermissionDenied
		r.vault.refused(vs)
	case vault.Classify(err) == vault.KindInvalid:
		reason = ReasonInvalid
	}
	return r.failed(ctx, vs, orig, now, reason, err)
}

// failed records a failed pass: Ready=False for this generation (seen,
// not applied), and the retry time in refreshAt, 5 s after the first
// failure and backing off to 5 min. Deleting the Secret at its expiry is
// the Expirer's job, which does not wait on this path.
func (r *Reconciler) failed(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, now time.Time, reason string, err error) (ctrl.Result, string, error) {
	st := &vs.Status
	expiresAt := timeOf(st.ExpiresAt)
	reason, msg := FailureReason(now, expiresAt, retained(vs), reason, explain(err))
	prev := meta.FindStatusCondition(st.Conditions, "Ready")
	expiredNow := reason == ReasonExpired && (prev == nil || prev.Reason != ReasonExpired)
	firstFailure := r.status.setFailed(vs, reason, msg) && reason != ReasonExpired
	failingSince := FailingSince(meta.FindStatusCondition(st.Conditions, "Ready"), vs.Generation)
	retry := RetryAfter(now, failingSince, expiresAt)
	if at := earliestRevokePrevious(st); !at.IsZero() && at.After(now) {
		retry = min(retry, at.Sub(now))
	}
	st.RefreshAt = ptrTime(now.Add(retry))
	if err := r.status.write(ctx, vs, orig); err != nil {
		return ctrl.Result{}, "failed", err
	}
	if firstFailure {
		r.status.event(vs, corev1.EventTypeWarning, reason, "Sync", "%s", msg)
	}
	if expiredNow {
		// Told and counted once the mark is written: a pass whose write
		// failed is not the one that marked it, and the next would count
		// it again. A retained Secret is counted here, where it is kept;
		// a deleted one by the Expirer, which deletes it and may mark it
		// first.
		if r.Metrics != nil && retained(vs) {
			r.Metrics.expired.WithLabelValues(v1alpha1.ExpiryRetain).Inc()
		}
		r.status.event(vs, corev1.EventTypeWarning, ReasonExpired, "Expire", "%s", msg)
	}
	return ctrl.Result{RequeueAfter: retry}, "failed", nil
}
