package syncer

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// decideJournal is the journal rules for one journal, either form of the
// spec: a source that does not lease releases whatever the journal
// holds; a pending lease the Secret holds is promoted, one the Secret
// read from the API server lacks is dropped; a replaced lease is revoked
// when due. It returns the current lease after the plan (nil for none).
func decideJournal(j v1alpha1.LeaseJournal, leases bool, o Observed, now time.Time) (JournalPlan, *v1alpha1.Lease) {
	var jp JournalPlan
	if !leases {
		jp.ReleaseStale = !emptyJournal(&j)
		return jp, nil
	}
	cur := j.Lease
	if j.PendingLease != nil {
		switch {
		case o.Secret.holds(j.PendingLease.ID):
			jp.Promote = true
			cur = promoted(j, now, o.VS.Spec.RevokeGracePeriod)
		case o.Confirmed:
			jp.DropPending = true
		}
	}
	jp.Previous = previousAction(cur, now)
	return jp, cur
}

// leaseDue is DecideLease for a current lease l: renewed last at the
// later of its issue and lastSync (unless promoted in this very pass),
// alive with the token the controller holds when that token made it.
func leaseDue(o Observed, l *v1alpha1.Lease, lastSync *metav1.Time, promotedNow bool, now time.Time) (LeaseAction, time.Time) {
	vs := o.VS
	live := o.TokenAccessor != "" && o.TokenAccessor == l.TokenAccessor
	tokenEnd := timeOf(l.TokenExpiresAt)
	if live && !o.TokenExpires.IsZero() {
		tokenEnd = o.TokenExpires
	}
	renewedAt := l.IssuedAt.Time
	if lastSync != nil && lastSync.After(renewedAt) && !promotedNow {
		renewedAt = lastSync.Time
	}
	return DecideLease(now, LeaseFacts{IssuedAt: l.IssuedAt.Time, RenewedAt: renewedAt, ExpiresAt: l.ExpiresAt.Time,
		TokenExpiresAt: tokenEnd, TokenLive: live, TokenUnknown: l.TokenAccessor == "", Renewable: l.Renewable,
		Wanted: wantedTTL(vs)}, jitterFor(string(vs.UID)))
}

// previousAction is what to do with the replaced lease of l now.
func previousAction(l *v1alpha1.Lease, now time.Time) PreviousAction {
	if l == nil || l.PreviousID == "" {
		return PreviousWait
	}
	return DecidePrevious(now, timeOf(l.RevokePreviousAt), timeOf(l.PreviousExpiresAt))
}

func revokePreviousAt(l *v1alpha1.Lease) time.Time {
	if l == nil || l.PreviousID == "" {
		return time.Time{}
	}
	return timeOf(l.RevokePreviousAt)
}
