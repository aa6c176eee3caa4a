package syncer

import (
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// The lease journal lives in status, one per dynamic source (status for
// spec.source, status.sources[i] for spec.sources): the pending lease
// (issued, not yet seen in the Secret), the current one (the Secret holds
// it) and the previous one (replaced, revoked after the grace period).
// Every lease Vault issued for a VaultSecret is in one of the three slots
// before the Secret is written, so none is ever left for nobody to revoke;
// and a lease moves to current only once the Secret is read back holding
// it, so revocation never reaches credentials a Secret still holds. The
// functions below are the only ones that move leases between the slots,
// whichever source the journal belongs to.

// leaseRef is a lease to revoke and the Vault that issued it (see
// v1alpha1.Lease.Vault).
type leaseRef struct {
	ID, Vault string
}

// recordPending records a lease just issued as pending. An earlier
// pending lease never reached the Secret; it is returned to be revoked.
func recordPending(j *v1alpha1.LeaseJournal, f fetched, tok *TenantToken, now time.Time) (dropped leaseRef) {
	if p := j.PendingLease; p != nil {
		dropped = leaseRef{p.ID, p.Vault}
	}
	j.PendingLease = &v1alpha1.Lease{ID: f.leaseID, IssuedAt: metav1.NewTime(now), ExpiresAt: metav1.NewTime(now.Add(f.leaseDuration)),
		Renewable: f.leaseRenewable, TokenAccessor: tok.Accessor, TokenExpiresAt: ptrTime(tok.Expires), Vault: tok.Vault}
	return dropped
}

// promoted is the pending lease as the current one, with the lease it
// replaces scheduled for revocation after the grace period (never after
// that lease's own end).
func promoted(j v1alpha1.LeaseJournal, now time.Time, grace *metav1.Duration) *v1alpha1.Lease {
	next := j.PendingLease.DeepCopy()
	next.PreviousID, next.PreviousVault, next.RevokePreviousAt, next.PreviousExpiresAt = "", "", nil, nil
	prev := j.Lease
	if prev == nil || prev.ID == next.ID {
		return next
	}
	end := EffectiveEnd(prev.ExpiresAt.Time, timeOf(prev.TokenExpiresAt))
	var g *time.Duration
	if grace != nil {
		g = &grace.Duration
	}
	next.PreviousID, next.PreviousVault = prev.ID, prev.Vault
	next.RevokePreviousAt = ptrTime(RevokeAt(now, end, g))
	next.PreviousExpiresAt = ptrTime(end)
	return next
}

// promote makes the pending lease current. A replaced lease still waiting
// for its revocation (two replacements within one grace period) is
// returned: no Secret holds it any more, so it goes now.
func promote(j *v1alpha1.LeaseJournal, now time.Time, grace *metav1.Duration) (older leaseRef) {
	if j.Lease != nil && j.Lease.PreviousID != "" && j.Lease.PreviousID != j.PendingLease.ID {
		older = leaseRef{j.Lease.PreviousID, j.Lease.PreviousVault}
	}
	j.Lease = promoted(*j, now, grace)
	j.PendingLease = nil
	j.RevokeFailures = 0
	return older
}

// clearPrevious forgets the replaced lease: revoked, refused or ended.
func clearPrevious(j *v1alpha1.LeaseJournal) {
	if l := j.Lease; l != nil {
		l.PreviousID, l.PreviousVault, l.RevokePreviousAt, l.PreviousExpiresAt = "", "", nil, nil
	}
	j.RevokeFailures = 0
}

// dropLease forgets lease id wherever a journal of a source that no
// longer leases names it; what it names besides stays to be revoked.
func dropLease(j *v1alpha1.LeaseJournal, id string) {
	if j.PendingLease != nil && j.PendingLease.ID == id {
		j.PendingLease = nil
	}
	l := j.Lease
	switch {
	case l == nil:
	case l.PreviousID == id:
		clearPrevious(j)
	case l.ID == id && l.PreviousID == "":
		j.Lease = nil
	case l.ID == id:
		// The replaced lease it names takes its slot, with its own end.
		end := l.ExpiresAt
		if l.PreviousExpiresAt != nil {
			end = *l.PreviousExpiresAt
		}
		j.Lease = &v1alpha1.Lease{ID: l.PreviousID, Vault: l.PreviousVault, IssuedAt: l.IssuedAt, ExpiresAt: end}
	}
}

// empty tells whether the journal names no lease at all.
func emptyJournal(j *v1alpha1.LeaseJournal) bool {
	return j.PendingLease == nil && j.Lease == nil
}

// journalsOf is every lease journal in status: spec.source's, then one
// per entry of status.sources (including those of sources since removed
// from the spec whose leases are not revoked yet).
func journalsOf(st *v1alpha1.VaultSecretStatus) []*v1alpha1.LeaseJournal {
	js := make([]*v1alpha1.LeaseJournal, 0, 1+len(st.Sources))
	js = append(js, &st.LeaseJournal)
	for i := range st.Sources {
		js = append(js, &st.Sources[i].LeaseJournal)
	}
	return js
}

// journalIDs is every lease a journal names that may still be alive at
// now: what deletion, or a source that no longer leases, revokes.
func journalIDs(j *v1alpha1.LeaseJournal, now time.Time) []leaseRef {
	var ids []leaseRef
	if p := j.PendingLease; p != nil && now.Before(EffectiveEnd(p.ExpiresAt.Time, timeOf(p.TokenExpiresAt))) {
		ids = append(ids, leaseRef{p.ID, p.Vault})
	}
	if l := j.Lease; l != nil {
		if now.Before(EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt))) {
			ids = append(ids, leaseRef{l.ID, l.Vault})
		}
		if l.PreviousID != "" && DecidePrevious(now, time.Time{}, timeOf(l.PreviousExpiresAt)) != PreviousForget {
			ids = append(ids, leaseRef{l.PreviousID, l.PreviousVault})
		}
	}
	return ids
}

// allJournalIDs is every lease of every journal in status that may still
// be alive at now: what deletion revokes.
func allJournalIDs(st *v1alpha1.VaultSecretStatus, now time.Time) []leaseRef {
	var ids []leaseRef
	for _, j := range journalsOf(st) {
		ids = append(ids, journalIDs(j, now)...)
	}
	return ids
}

// journalEnd is the latest effective end of the leases of every journal
// in status.
func journalEnd(st *v1alpha1.VaultSecretStatus) time.Time {
	var end time.Time
	for _, j := range journalsOf(st) {
		for _, l := range []*v1alpha1.Lease{j.PendingLease, j.Lease} {
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
	}
	return end
}

// earliestRevokePrevious is the earliest scheduled revocation of a
// replaced lease in any journal, zero when none is scheduled.
func earliestRevokePrevious(st *v1alpha1.VaultSecretStatus) time.Time {
	var at time.Time
	for _, j := range journalsOf(st) {
		at = NextWake(at, revokePreviousAt(j.Lease))
	}
	return at
}

// The Secret names the leases whose credentials it holds in
// LeaseAnnotation: one id for spec.source, the current lease of each
// dynamic source in order, comma-separated, for spec.sources. Lease ids
// are Vault paths plus a random suffix and hold no comma.

// joinLeases is the annotation's value for these lease ids.
func joinLeases(ids []string) string { return strings.Join(ids, ",") }

// holdsLease tells whether an annotation value names lease id.
func holdsLease(annotation, id string) bool {
	if id == "" {
		return false
	}
	for _, held := range strings.Split(annotation, ",") {
		if held == id {
			return true
		}
	}
	return false
}

// holdsAll tells whether an annotation value names every one of ids.
func holdsAll(annotation string, ids []string) bool {
	for _, id := range ids {
		if !holdsLease(annotation, id) {
			return false
		}
	}
	return true
}

// currentLeases is the id of the current lease of every dynamic source
// of the spec, in order: what the Secret must hold for Ready=True.
func currentLeases(vs *v1alpha1.VaultSecret) []string {
	st := &vs.Status
	var ids []string
	if len(vs.Spec.Sources) == 0 {
		if vs.Spec.Source.Dynamic != nil && st.Lease != nil {
			ids = append(ids, st.Lease.ID)
		}
		return ids
	}
	for i, src := range vs.Spec.Sources {
		if src.Dynamic != nil && i < len(st.Sources) && st.Sources[i].Lease != nil {
			ids = append(ids, st.Sources[i].Lease.ID)
		}
	}
	return ids
}
