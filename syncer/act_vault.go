package syncer

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// fetchAndWrite reads the source and writes the Secret. A new lease is
// recorded as pending before the Secret is written, so it is never lost;
// it becomes current, and the one it replaces is scheduled for
// revocation, only once the API server answers the write holding it.
func (r *Reconciler) fetchAndWrite(ctx context.Context, o *observation, p Plan, orig *v1alpha1.VaultSecretStatus, now time.Time) (ctrl.Result, string, error) {
	vs := o.vs
	st := &vs.Status
	key := client.ObjectKeyFromObject(vs)
	tok, err := r.vault.tenant(ctx, vs)
	if err != nil {
		return r.failed(ctx, vs, orig, now, authFailureReason(err), err)
	}
	// From here on credentials may be issued. A shutdown cancels ctx, and
	// a pass cut short after Vault issued would leave them unrecorded: a
	// lease nobody revokes, and another replica issuing again. So once
	// told to stop the pass still gets finishAfterShutdown to finish;
	// controller-runtime waits for running passes before the process
	// exits, and that time is shorter than the leader election Lease, so
	// no other replica acts meanwhile.
	ctx, cancelPass := outliveCancel(ctx, finishAfterShutdown)
	defer cancelPass()
	r.Log.V(1).Info("reading Vault", "vaultsecret", key, "why", p.Why)
	if p.Restore {
		r.status.event(vs, corev1.EventTypeWarning, "Restored", "Sync", "Secret %q was changed by hand; restoring it from Vault", targetName(vs))
		r.restored(key, now)
	}
	f, err := r.vault.fetch(ctx, vs, &vs.Spec.Source, o.kind, tok)
	if err != nil {
		return r.failedVault(ctx, vs, orig, now, err)
	}
	if !o.kind.leased() {
		// Nothing issued: no revocation can follow.
		o.vaultDone()
	}
	data, err := shape(vs, f.data, r.Clock)
	if err != nil {
		if f.leaseID != "" {
			r.vault.releaseUnused(ctx, tok, f.leaseID)
		}
		return r.failed(ctx, vs, orig, now, ReasonInvalid, err)
	}
	if o.kind.leased() {
		if dropped := recordPending(&st.LeaseJournal, f, tok, now); dropped.ID != "" {
			r.releaseReplaced(ctx, o, tok, dropped)
		}
		// The journal is written before the Secret: a failed write never
		// leaves a lease nobody will revoke.
		if err := r.status.write(ctx, vs, orig); err != nil {
			r.vault.releaseUnused(ctx, tok, f.leaseID)
			return ctrl.Result{}, "error", err
		}
	}
	refreshAt, expiresAt := o.kind.plan(now, vs, f, tok.Expires)
	changed := st.DataHMAC != "" && dataState(r.HMACKey, st.DataHMAC, data) == DataEdited
	rec := passRecord(o, now, refreshAt, expiresAt, restartOwedAt(vs, changed, now))
	w, err := r.secrets.apply(ctx, vs, data, expiresAt, f.leaseID, sealRecord(r.HMACKey, vs.UID, rec, data), o.secret, o.unread)
	if err != nil {
		// The pending lease stays in the journal: a later pass that reads
		// the Secret holding it promotes it, else revokes it.
		return r.secretWriteFailed(ctx, vs, orig, now, err)
	}
	if o.kind.leased() {
		if w.LeaseID != f.leaseID {
			return r.failed(ctx, vs, orig, now, ReasonSecretWrite, errors.New("the Secret read back does not hold the new lease"))
		}
		if older := promote(&st.LeaseJournal, now, vs.Spec.RevokeGracePeriod); older.ID != "" {
			r.releaseReplaced(ctx, o, tok, older)
		}
	}
	st.DataHMAC, st.SecretName = dataHMAC(r.HMACKey, data), targetName(vs)
	st.ExpiresAt, st.RefreshAt, st.LastSyncTime = ptrTime(expiresAt), ptrTime(refreshAt), ptrTime(now)
	st.SourceHash, st.MetadataHash, st.AppliedGeneration = o.SourceHash, o.MetadataHash, vs.Generation
	r.status.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("Secret %q synced; expires at %s", targetName(vs), formatTime(expiresAt)))
	if changed {
		r.newData(ctx, vs, now)
	}
	wake := NextWake(refreshAt, revokePreviousAt(st.Lease))
	return requeueAt(now, wake), "synced", r.status.write(ctx, vs, orig)
}

// renew extends the current lease and moves the Secret's expiry with it.
// A renewal cut short, or a lease Vault no longer knows, is replaced by
// new credentials; a renewal refused in both forms is reported with the
// policy line it needs, not replaced silently.
func (r *Reconciler) renew(ctx context.Context, o *observation, p Plan, orig *v1alpha1.VaultSecretStatus, now time.Time) (ctrl.Result, string, error) {
	vs := o.vs
	st := &vs.Status
	l := st.Lease
	key := client.ObjectKeyFromObject(vs)
	tok, err := r.vault.tenant(ctx, vs)
	if err != nil {
		return r.failed(ctx, vs, orig, now, authFailureReason(err), err)
	}
	rn, err := r.renewCurrent(ctx, vs, tok, l, st.LastSyncTime, now)
	if err != nil {
		return r.failedVault(ctx, vs, orig, now, err)
	}
	if rn.reissue != "" {
		r.Log.Info("issuing new credentials", "vaultsecret", key, "reason", rn.reissue)
		r.vault.countLease("reissue", nil)
		p.Action, p.Why = ActFetch, rn.reissue
		return r.fetchAndWrite(ctx, o, p, orig, now)
	}
	st.LastSyncTime, st.RefreshAt, st.ExpiresAt = ptrTime(now), ptrTime(rn.refreshAt), ptrTime(rn.end)
	// The renewal is in status before the Secret's expiry moves: should
	// that write fail, the next pass sees the two disagree and rewrites
	// the expiry, and the Expirer, seeing status promise more, waits.
	if err := r.writeMetadata(ctx, o); err != nil {
		return r.failed(ctx, vs, orig, now, ReasonSecretWrite, err)
	}
	st.MetadataHash = o.MetadataHash
	r.status.setReady(vs, metav1.ConditionTrue, ReasonSynced, "lease renewed until "+formatTime(rn.end))
	return requeueAt(now, NextWake(rn.refreshAt, revokePreviousAt(l))), "renewed", r.status.write(ctx, vs, orig)
}

// renewal is what renewing one current lease came to.
type renewal struct {
	// reissue, when set, says why new credentials are needed instead.
	reissue string
	// refreshAt and end are the lease's next renewal and effective end.
	refreshAt, end time.Time
}

// renewCurrent renews the current lease l of a source (renewed last at
// lastSync) and records in l what Vault granted. A lease bound to a token
// the controller no longer holds, a renewal cut short by the max TTL, or
// one of a lease Vault no longer knows asks for new credentials; a
// renewal refused in both forms, or a Vault that does not answer, is an
// error, not a silent re-issue. The same for spec.source and each of
// spec.sources.
func (r *Reconciler) renewCurrent(ctx context.Context, vs *v1alpha1.VaultSecret, tok *TenantToken, l *v1alpha1.Lease, lastSync *metav1.Time, now time.Time) (renewal, error) {
	if elsewhere(l.Vault, tok.Vault) {
		// Never sent to a Vault that did not issue it.
		return renewal{reissue: "the lease was issued by another Vault than the connection now points to"}, nil
	}
	live := tok.Accessor != "" && tok.Accessor == l.TokenAccessor
	tokenBound := l.TokenExpiresAt != nil && !l.TokenExpiresAt.After(l.ExpiresAt.Time)
	if tokenBound && !live {
		return renewal{reissue: "the token that created the lease is gone"}, nil
	}
	renewedAt := l.IssuedAt.Time
	if lastSync != nil && lastSync.After(renewedAt) {
		renewedAt = lastSync.Time
	}
	asked := l.ExpiresAt.Sub(renewedAt)
	granted, err := r.vault.renew(ctx, tok, l.ID, asked)
	var denied *renewDeniedError
	switch {
	case errors.As(err, &denied):
		return renewal{}, err
	case err != nil && vault.Classify(err) == vault.KindUnavailable:
		return renewal{}, err
	case err != nil:
		return renewal{reissue: "renewal refused: " + explain(err)}, nil
	case RenewalCutShort(asked, granted):
		return renewal{reissue: fmt.Sprintf("max TTL reached: asked %s, granted %s", asked, granted)}, nil
	}
	l.ExpiresAt = metav1.NewTime(now.Add(granted))
	if live {
		l.TokenExpiresAt = ptrTime(tok.Expires)
	}
	end := EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt))
	_, refresh := DecideLease(now, LeaseFacts{IssuedAt: l.IssuedAt.Time, RenewedAt: now, ExpiresAt: l.ExpiresAt.Time, TokenExpiresAt: timeOf(l.TokenExpiresAt),
		TokenLive: live, Renewable: l.Renewable, Wanted: wantedTTL(vs)}, jitterFor(string(vs.UID)))
	return renewal{refreshAt: refresh, end: end}, nil
}

// authFailureReason is the condition reason for a failed login: a Vault
// that could not answer is VaultUnavailable (retrying will fix it), any
// other failure AuthFailed.
func authFailureReason(err error) string {
	if vault.Classify(err) == vault.KindUnavailable {
		return ReasonVaultUnavailable
	}
	return ReasonAuthFailed
}
