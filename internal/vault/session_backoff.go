package vault

import "time"

// BackoffPolicy paces logins.
type BackoffPolicy struct {
	// Min is the first wait, Max the longest.
	Min, Max time.Duration
	// StableHold is how long a token must be kept before the wait halves
	// (down to Min); a token replaced sooner, or refused by Vault at any
	// age, doubles it (up to Max), like a failed login. Halving rather than resetting keeps a token that
	// alternates between long holds and instant refusals from logging in
	// faster than a steady failure would.
	StableHold time.Duration
}

// DefaultBackoff: a token that is dropped at once, every time, costs at
// most 7 logins in the first minute (LoginBound) and 2 a minute after
// that; tokens kept 10s or more, and not refused, keep the wait at 0.5s.
var DefaultBackoff = BackoffPolicy{Min: 500 * time.Millisecond, Max: 30 * time.Second, StableHold: 10 * time.Second}

// NextLoginWait returns how long after the last login attempt the next one
// may start. prev is the previous wait (0 before any), held how long the
// last token was kept (ignored when failed).
func NextLoginWait(prev, held time.Duration, failed bool, p BackoffPolicy) time.Duration {
	if !failed && held >= p.StableHold {
		return max(p.Min, prev/2)
	}
	if prev <= 0 {
		return p.Min
	}
	return min(2*prev, p.Max)
}

// LoginBound is the most logins a session can make in window, whatever
// Vault answers: the first at once, then waits growing by NextLoginWait.
func LoginBound(window time.Duration, p BackoffPolicy) int {
	n, at, wait := 1, time.Duration(0), time.Duration(0)
	for {
		wait = NextLoginWait(wait, 0, true, p)
		at += wait
		if at > window {
			return n
		}
		n++
	}
}

// ReplaceGrace is how long before its expiry a token is replaced: a fifth
// of its lifetime, at most 30s.
func ReplaceGrace(ttl time.Duration) time.Duration { return min(ttl/5, 30*time.Second) }
