package syncer

import (
	"sync"
	"time"
)

// Fairness between namespaces. Every Vault call has a deadline
// (--vault-request-timeout), but a tenant whose logins or reads hang until
// that deadline would, with enough VaultSecrets queued, hold every worker
// for as long as it keeps hanging, and every other namespace would wait.
// So a namespace gets at most NamespaceSlots(workers) passes calling Vault
// at once. A pass that finds its namespace's slots taken does not wait for
// one (waiting would hold the worker all the same): it is requeued after
// ThrottleDelay and its worker serves another VaultSecret.

// NamespaceSlots is how many passes of one namespace may call Vault at
// once: a quarter of the workers, at least one. With the default 8
// workers, a namespace whose Vault calls all hang holds 2 and leaves 6.
func NamespaceSlots(workers int) int {
	return max(1, workers/4)
}

// throttleRetry is the base wait of a pass that found no free slot: long
// enough not to spin on a namespace that hangs for the request timeout,
// short enough that a namespace merely busy is served promptly.
const throttleRetry = 2 * time.Second

// ThrottleDelay is when a pass that found no free slot tries again:
// throttleRetry plus up to as much again, spread by jitter in [0, 1), so
// a namespace's queued VaultSecrets do not all come back at once.
func ThrottleDelay(jitter float64) time.Duration {
	return throttleRetry + time.Duration(jitter*float64(throttleRetry))
}

// namespaceLimiter counts the passes calling Vault per namespace. It never
// blocks; the zero value of limit (or a nil limiter) limits nothing.
type namespaceLimiter struct {
	limit int

	mu    sync.Mutex
	inUse map[string]int
}

func newNamespaceLimiter(limit int) *namespaceLimiter {
	return &namespaceLimiter{limit: limit, inUse: map[string]int{}}
}

// tryAcquire takes one of ns's slots without waiting. It returns the
// function that gives the slot back (safe to call more than once), or
// false when all of ns's slots are taken.
func (l *namespaceLimiter) tryAcquire(ns string) (release func(), ok bool) {
	if l == nil || l.limit <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inUse[ns] >= l.limit {
		return nil, false
	}
	l.inUse[ns]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			// Namespaces come and go: an idle one keeps no entry.
			if l.inUse[ns]--; l.inUse[ns] <= 0 {
				delete(l.inUse, ns)
			}
		})
	}, true
}

// inFlight is how many of ns's slots are taken.
func (l *namespaceLimiter) inFlight(ns string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inUse[ns]
}

// callsVault tells whether carrying out the plan may call Vault, and so
// needs a slot of the namespace. Promote counts: it revokes at once a
// replaced lease still awaiting revocation.
func (p Plan) callsVault() bool {
	return p.Action == ActFetch || p.Action == ActRenew || p.Promote || p.DropPending || p.ReleaseStale || p.Previous == PreviousRevoke
}
