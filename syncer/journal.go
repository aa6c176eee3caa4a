package syncer

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// The lease journal lives in status: the pending lease (issued, not yet
// seen in the Secret), the current one (the Secret holds it) and the
// previous one (replaced, revoked after the grace period). Every lease
// Vault issued for a VaultSecret is in one of the three slots before the
// Secret is written, so none is ever left for nobody to revoke; and a
// lease moves to current only once the Secret is read back holding it, so
// revocation never reaches credentials a Secret still holds.

// recordPending records a lease just issued as pending. An earlier
// pending lease never reached the Secret; it is returned to be revoked.
func recordPending(st *v1alpha1.VaultSecretStatus, f fetched, tok *TenantToken, now time.Time) (dropped string) {
	if st.PendingLease != nil {
		dropped = st.PendingLease.ID
	}
	st.PendingLease = &v1alpha1.Lease{ID: f.leaseID, IssuedAt: metav1.NewTime(now), ExpiresAt: metav1.NewTime(now.Add(f.leaseDuration)),
		Renewable: f.leaseRenewable, TokenAccessor: tok.Accessor, TokenExpiresAt: ptrTime(tok.Expires)}
	return dropped
}

// promoted is the pending lease as the current one, with the lease it
// replaces scheduled for revocation after the grace period (never after
// that lease's own end).
func promoted(st v1alpha1.VaultSecretStatus, now time.Time, grace *metav1.Duration) *v1alpha1.Lease {
	next := st.PendingLease.DeepCopy()
	next.PreviousID, next.RevokePreviousAt, next.PreviousExpiresAt = "", nil, nil
	prev := st.Lease
	if prev == nil || prev.ID == next.ID {
		return next
	}
	end := EffectiveEnd(prev.ExpiresAt.Time, timeOf(prev.TokenExpiresAt))
	var g *time.Duration
	if grace != nil {
		g = &grace.Duration
	}
	next.PreviousID = prev.ID
	next.RevokePreviousAt = ptrTime(RevokeAt(now, end, g))
	next.PreviousExpiresAt = ptrTime(end)
	return next
}

// promote makes the pending lease current. A replaced lease still waiting
// for its revocation (two replacements within one grace period) is
// returned: no Secret holds it any more, so it goes now.
func promote(st *v1alpha1.VaultSecretStatus, now time.Time, grace *metav1.Duration) (older string) {
	if st.Lease != nil && st.Lease.PreviousID != "" && st.Lease.PreviousID != st.PendingLease.ID {
		older = st.Lease.PreviousID
	}
	st.Lease = promoted(*st, now, grace)
	st.PendingLease = nil
	st.RevokeFailures = 0
	return older
}

// clearPrevious forgets the replaced lease: revoked, refused or ended.
func clearPrevious(st *v1alpha1.VaultSecretStatus) {
	if l := st.Lease; l != nil {
		l.PreviousID, l.RevokePreviousAt, l.PreviousExpiresAt = "", nil, nil
	}
	st.RevokeFailures = 0
}

// journalIDs is every lease the journal names that may still be alive at
// now: what deletion, or a source that no longer leases, revokes.
func journalIDs(st *v1alpha1.VaultSecretStatus, now time.Time) []string {
	var ids []string
	if p := st.PendingLease; p != nil && now.Before(EffectiveEnd(p.ExpiresAt.Time, timeOf(p.TokenExpiresAt))) {
		ids = append(ids, p.ID)
	}
	if l := st.Lease; l != nil {
		if now.Before(EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt))) {
			ids = append(ids, l.ID)
		}
		if l.PreviousID != "" && DecidePrevious(now, time.Time{}, timeOf(l.PreviousExpiresAt)) != PreviousForget {
			ids = append(ids, l.PreviousID)
		}
	}
	return ids
}

// journalEnd is the latest effective end of the leases in the journal.
func journalEnd(st *v1alpha1.VaultSecretStatus) time.Time {
	var end time.Time
	for _, l := range []*v1alpha1.Lease{st.PendingLease, st.Lease} {
		if l == nil {
			continue
		}
		if e := EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt)); e.After(end) {
			end = e
		}
		if p := timeOf(l.PreviousExpiresAt); p.After(end) {
			end = p
		}
	}
	return end
}
