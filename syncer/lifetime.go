// Package syncer turns VaultSecrets into short-lived Kubernetes Secrets.
// The decisions (when to refresh, renew, re-issue, revoke, delete) are
// pure functions of the facts and the time, kept apart from the I/O in the
// reconciler.
package syncer

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// refreshFraction is how far into a lifetime the controller refreshes:
// two thirds, leaving a third for retries while Vault is unreachable.
const refreshFraction = 2.0 / 3.0

// jitterFraction spreads refreshes of many Secrets created together over
// this share of their lifetime, so they do not all hit Vault at once.
const jitterFraction = 0.1

// refreshPoint returns start + 2/3 of life, brought forward by up to a
// tenth of life according to jitter in [0, 1).
func refreshPoint(start time.Time, life time.Duration, jitter float64) time.Time {
	at := start.Add(time.Duration(float64(life) * refreshFraction))
	return at.Add(-time.Duration(float64(life) * jitterFraction * jitter))
}

// KVPlan is when a kv Secret is re-read and when it expires: ttl after the
// last successful read. The read is due every interval (spec.refreshInterval,
// brought forward by up to a tenth of it by jitter), or at two thirds of
// ttl when interval is zero.
func KVPlan(lastRead time.Time, ttl, interval time.Duration, jitter float64) (refreshAt, expiresAt time.Time) {
	if interval > 0 {
		return lastRead.Add(interval - time.Duration(float64(interval)*jitterFraction*jitter)), lastRead.Add(ttl)
	}
	return refreshPoint(lastRead, ttl, jitter), lastRead.Add(ttl)
}

// PKIPlan re-issues at two thirds of the certificate's life; it expires at
// NotAfter.
func PKIPlan(notBefore, notAfter time.Time, jitter float64) (refreshAt, expiresAt time.Time) {
	return refreshPoint(notBefore, notAfter.Sub(notBefore), jitter), notAfter
}

// LeaseAction is what to do with a dynamic lease now.
type LeaseAction int

const (
	// LeaseWait: nothing to do before the returned time.
	LeaseWait LeaseAction = iota
	// LeaseRenew: renew the lease (same credentials).
	LeaseRenew
	// LeaseReissue: issue new credentials; the lease cannot reach the
	// wanted lifetime any more (max TTL) or cannot be renewed.
	LeaseReissue
)

// LeaseFacts describe a dynamic lease.
type LeaseFacts struct {
	IssuedAt  time.Time // when these credentials were issued
	RenewedAt time.Time // last successful issue or renewal
	ExpiresAt time.Time // end of the lease as Vault last said
	// TokenExpiresAt is the end of the token that created the lease, as
	// last known; zero for a token that does not expire. Vault revokes the
	// lease with the token.
	TokenExpiresAt time.Time
	// TokenLive tells whether the controller still holds that token and
	// can renew it; false after a restart or a re-login.
	TokenLive bool
	// TokenUnknown: the status names no token (written before tokens were
	// recorded), so the lease may end at any time.
	TokenUnknown bool
	Renewable    bool
	Wanted       time.Duration // spec.ttl: lifetime wanted from one set of credentials
	CutShort     bool          // the last renewal returned less than asked
}

// EffectiveEnd is when credentials really stop working: the earlier of the
// lease's end and the end of the token that created it.
func EffectiveEnd(leaseEnd, tokenEnd time.Time) time.Time {
	if !tokenEnd.IsZero() && tokenEnd.Before(leaseEnd) {
		return tokenEnd
	}
	return leaseEnd
}

// DecideLease returns the action for a lease at now, and when to look
// again if the action is LeaseWait.
func DecideLease(now time.Time, f LeaseFacts, jitter float64) (LeaseAction, time.Time) {
	if f.TokenUnknown {
		return LeaseReissue, now
	}
	end := EffectiveEnd(f.ExpiresAt, f.TokenExpiresAt)
	due := refreshPoint(f.RenewedAt, end.Sub(f.RenewedAt), jitter)
	if now.Before(due) {
		return LeaseWait, due
	}
	// Due: renew while that keeps the same credentials useful; otherwise
	// issue new ones before the old expire.
	if !f.Renewable || f.CutShort || now.Sub(f.IssuedAt) >= f.Wanted {
		return LeaseReissue, now
	}
	// A lease bound by a token the controller no longer holds dies with
	// that token whatever renewal says: only new credentials help.
	if tokenBound := !f.TokenExpiresAt.IsZero() && !f.TokenExpiresAt.After(f.ExpiresAt); tokenBound && !f.TokenLive {
		return LeaseReissue, now
	}
	return LeaseRenew, now
}

// RenewalCutShort tells whether Vault granted less than asked, which means
// the lease hit its max TTL and will not last as long as wanted.
func RenewalCutShort(asked, granted time.Duration) bool {
	// Vault rounds to whole seconds.
	return granted+time.Second < asked
}

// DefaultRevokeGrace covers kubelet's propagation of a changed Secret to
// pods (its sync period plus its cache TTL, about a minute each).
const DefaultRevokeGrace = 2 * time.Minute

// RevokeAt is when a replaced lease is revoked: after grace (default
// DefaultRevokeGrace), so consumers have moved to the new credentials, but
// never after the old lease's own effective end, when Vault has already
// revoked it.
func RevokeAt(replacedAt, oldEnd time.Time, grace *time.Duration) time.Time {
	g := DefaultRevokeGrace
	if grace != nil {
		g = *grace
	}
	at := replacedAt.Add(g)
	if !oldEnd.IsZero() && oldEnd.Before(at) {
		return oldEnd
	}
	return at
}

// PreviousAction is what to do with a replaced lease now.
type PreviousAction int

const (
	// PreviousWait: not due yet.
	PreviousWait PreviousAction = iota
	// PreviousRevoke: revoke it now.
	PreviousRevoke
	// PreviousForget: it has ended on its own; nothing left to revoke.
	PreviousForget
)

// DecidePrevious decides about a replaced lease: revoke at revokeAt, but
// not once its own end has passed (Vault has revoked it, and retrying a
// failing revoke past that point only loads Vault).
func DecidePrevious(now, revokeAt, previousEnd time.Time) PreviousAction {
	if !previousEnd.IsZero() && !now.Before(previousEnd) {
		return PreviousForget
	}
	if revokeAt.IsZero() || !now.Before(revokeAt) {
		return PreviousRevoke
	}
	return PreviousWait
}

// RevokeBackoff is the wait after the n-th failed revocation (n >= 1):
// 5s doubling up to 5m.
func RevokeBackoff(failures int32) time.Duration {
	d := 5 * time.Second
	for i := int32(1); i < failures && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// FinalizeAction is what deletion of a VaultSecret does about its lease.
type FinalizeAction int

const (
	// FinalizeRelease: revoke the lease, then let the object go.
	FinalizeRelease FinalizeAction = iota
	// FinalizeDone: nothing to revoke (none, expired, or opted out).
	FinalizeDone
)

// DecideFinalize tells whether deletion must still revoke a lease: not
// when there is none, when it has already ended (Vault revoked it), or
// when spec.revokeOnDelete is false.
func DecideFinalize(now time.Time, hasLease, revokeOnDelete bool, leaseEnd time.Time) FinalizeAction {
	if !hasLease || !revokeOnDelete {
		return FinalizeDone
	}
	if !leaseEnd.IsZero() && !now.Before(leaseEnd) {
		return FinalizeDone
	}
	return FinalizeRelease
}

// FinalizeRetryAfter is the wait before the next revocation attempt at
// deletion; it is 0 when retrying is pointless because the lease ends
// before the next attempt could help (then the finalizer goes).
func FinalizeRetryAfter(now, deletedAt, leaseEnd time.Time) time.Duration {
	d := RetryAfter(now, deletedAt, time.Time{})
	if !leaseEnd.IsZero() && !now.Add(d).Before(leaseEnd) {
		return 0
	}
	return d
}

// Expired tells whether a Secret has outlived its expiry without refresh.
func Expired(now, expiresAt time.Time) bool {
	return !expiresAt.IsZero() && !now.Before(expiresAt)
}

// NextWake is the earliest of the non-zero times.
func NextWake(ts ...time.Time) time.Time {
	var best time.Time
	for _, t := range ts {
		if !t.IsZero() && (best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	return best
}

// FailingSince is when the current generation started failing, from the
// Ready condition: zero when it is not failing, or the failure recorded is
// of an older spec (a spec change starts afresh and is retried promptly).
func FailingSince(ready *metav1.Condition, generation int64) time.Time {
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.ObservedGeneration != generation {
		return time.Time{}
	}
	return ready.LastTransitionTime.Time
}

// RetryAfter is how long to wait before retrying a failed refresh: half of
// how long it has been failing, between 5s and 5m, so a Vault outage or a
// revoked role does not turn into a storm of logins; but never past the
// Secret's expiry, which must be acted on.
func RetryAfter(now, failingSince, expiresAt time.Time) time.Duration {
	retry := 5 * time.Second
	if !failingSince.IsZero() {
		retry = min(max(now.Sub(failingSince)/2, 5*time.Second), 5*time.Minute)
	}
	if !expiresAt.IsZero() && now.Before(expiresAt) {
		retry = min(retry, max(time.Second, expiresAt.Sub(now)))
	}
	return retry
}
