// Package syncer turns VaultSecrets into short-lived Kubernetes Secrets.
// The decisions (when to refresh, renew, re-issue, revoke, delete) are
// pure functions of the facts and the time, kept apart from the I/O in the
// reconciler.
package syncer

import (
	"time"
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
// last successful read.
func KVPlan(lastRead time.Time, ttl time.Duration, jitter float64) (refreshAt, expiresAt time.Time) {
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
	IssuedAt   time.Time // when these credentials were issued
	RenewedAt  time.Time // last successful issue or renewal
	ExpiresAt  time.Time // end of the lease as Vault last said
	Renewable  bool
	Wanted     time.Duration // spec.ttl: lifetime wanted from one set of credentials
	CutShort   bool          // the last renewal returned less than asked
	Reissuable bool          // false while Vault is known unreachable
}

// DecideLease returns the action for a lease at now, and when to look
// again if the action is LeaseWait.
func DecideLease(now time.Time, f LeaseFacts, jitter float64) (LeaseAction, time.Time) {
	lease := f.ExpiresAt.Sub(f.RenewedAt)
	due := refreshPoint(f.RenewedAt, lease, jitter)
	if now.Before(due) {
		return LeaseWait, due
	}
	// Due: renew while that keeps the same credentials useful; otherwise
	// issue new ones before the old expire.
	if !f.Renewable || f.CutShort || now.Sub(f.IssuedAt) >= f.Wanted {
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

// RevokeAt is when a replaced lease is revoked: after grace (default a
// tenth of the new lease), so consumers have moved to the new credentials.
func RevokeAt(replacedAt time.Time, newLease time.Duration, grace *time.Duration) time.Time {
	g := newLease / 10
	if grace != nil {
		g = *grace
	}
	return replacedAt.Add(g)
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
