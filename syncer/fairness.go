package syncer

import (
	"slices"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Fairness between namespaces. Every Vault call has a deadline
// (--vault-request-timeout), but a tenant whose logins or reads hang until
// that deadline would, with enough VaultSecrets queued, hold every worker
// for as long as it keeps hanging, and every other namespace would wait.
// So a namespace that is slow (a pass of it running, or having run, past
// slowAfter within slowMemory) gets at most NamespaceSlots(workers) passes
// calling Vault at once. A namespace whose passes are quick may use more,
// up to NamespaceBurst(workers), which always leaves one worker to the
// others: the limit costs nothing while nobody hangs (a thousand
// VaultSecrets created at once in one namespace sync at the speed of all
// workers), and bites as soon as somebody does. A pass that finds no free
// slot does not wait for one (waiting would hold the worker all the same):
// it is parked, its worker serves another VaultSecret, and the next slot
// its namespace gives back enqueues it again; a requeue after
// ThrottleDelay is the backstop.

// NamespaceSlots is how many passes of a slow namespace may call Vault at
// once: a quarter of the workers, at least one. With the default 8
// workers, a namespace whose Vault calls all hang holds 2 and leaves 6.
func NamespaceSlots(workers int) int {
	return max(1, workers/4)
}

// NamespaceBurst is how many passes of a quick namespace may call Vault at
// once: all workers but one, at least one.
func NamespaceBurst(workers int) int {
	return max(1, workers-1)
}

// A pass running this long makes its namespace slow, and the namespace
// stays slow this long after its last slow pass ended.
const (
	slowAfter  = time.Second
	slowMemory = time.Minute
)

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
	// limit is a slow namespace's slots; burst a quick one's (0: limit).
	limit, burst int
	now          func() time.Time

	mu   sync.Mutex
	next uint64
	// inUse holds the start of each pass in flight, by namespace.
	inUse map[string]map[uint64]time.Time
	// slowUntil is when a namespace stops counting as slow.
	slowUntil map[string]time.Time
	// parked holds, per namespace and in arrival order, the passes that
	// found no free slot; isParked holds each of them once.
	parked   map[string][]client.ObjectKey
	isParked map[client.ObjectKey]bool
	// wake enqueues a parked pass again (nil: nothing is parked).
	wake func(client.ObjectKey)
}

// newNamespaceLimiter limits every namespace to limit passes at once.
func newNamespaceLimiter(limit int) *namespaceLimiter {
	return newBurstLimiter(limit, limit, time.Now)
}

// newBurstLimiter lets a quick namespace use burst slots and a slow one
// limit.
func newBurstLimiter(limit, burst int, now func() time.Time) *namespaceLimiter {
	return &namespaceLimiter{limit: limit, burst: max(limit, burst), now: now,
		inUse: map[string]map[uint64]time.Time{}, slowUntil: map[string]time.Time{},
		parked: map[string][]client.ObjectKey{}, isParked: map[client.ObjectKey]bool{}}
}

// SlotLimit is how many passes a namespace may have calling Vault at now:
// burst, or limit while it is slow (a pass in flight started at or before
// now-slowAfter, or slowUntil not yet passed).
func SlotLimit(limit, burst int, starts []time.Time, slowUntil, now time.Time) int {
	if now.Before(slowUntil) {
		return limit
	}
	for _, s := range starts {
		if now.Sub(s) >= slowAfter {
			return limit
		}
	}
	return burst
}

// tryAcquire takes one of ns's slots without waiting. It returns the
// function that gives the slot back (safe to call more than once), or
// false when all of ns's slots are taken.
func (l *namespaceLimiter) tryAcquire(ns string) (release func(), ok bool) {
	return l.acquire(ns, nil)
}

// tryAcquireOrPark is tryAcquire for key's pass; when no slot is free it
// parks key, and the next slot of its namespace given back wakes it (see
// wake). A merely busy namespace then gets its deferred passes served the
// moment a pass of its own ends, not at their requeue timer, which stays
// as a backstop.
func (l *namespaceLimiter) tryAcquireOrPark(key client.ObjectKey) (release func(), ok bool) {
	return l.acquire(key.Namespace, &key)
}

func (l *namespaceLimiter) acquire(ns string, park *client.ObjectKey) (release func(), ok bool) {
	if l == nil || l.limit <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	starts := make([]time.Time, 0, len(l.inUse[ns]))
	for _, s := range l.inUse[ns] {
		starts = append(starts, s)
	}
	if len(starts) >= SlotLimit(l.limit, l.burst, starts, l.slowUntil[ns], now) {
		if park != nil && l.wake != nil && !l.isParked[*park] {
			l.isParked[*park] = true
			l.parked[ns] = append(l.parked[ns], *park)
		}
		return nil, false
	}
	if park != nil {
		// Served now, however it came back (its wake, its requeue, an
		// event): it leaves the line, so the next slot given back wakes
		// a pass still waiting, not this one again.
		l.lockedForget(*park)
	}
	if l.inUse[ns] == nil {
		l.inUse[ns] = map[uint64]time.Time{}
	}
	l.next++
	id := l.next
	l.inUse[ns][id] = now
	var once sync.Once
	return func() {
		once.Do(func() {
			if k, ok := l.release(ns, id); ok {
				// Outside the lock: wake may block on the controller's
				// queue.
				l.wake(k)
			}
		})
	}, true
}

// release gives back ns's slot id and unparks the first pass waiting for
// one, if any.
func (l *namespaceLimiter) release(ns string, id uint64) (client.ObjectKey, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	end := l.now()
	if end.Sub(l.inUse[ns][id]) >= slowAfter {
		l.slowUntil[ns] = end.Add(slowMemory)
	}
	delete(l.inUse[ns], id)
	// Namespaces come and go: an idle one keeps no entry.
	if len(l.inUse[ns]) == 0 {
		delete(l.inUse, ns)
	}
	if u, ok := l.slowUntil[ns]; ok && !end.Before(u) {
		delete(l.slowUntil, ns)
	}
	q := l.parked[ns]
	if len(q) == 0 {
		return client.ObjectKey{}, false
	}
	k := q[0]
	if len(q) == 1 {
		delete(l.parked, ns)
	} else {
		l.parked[ns] = q[1:]
	}
	delete(l.isParked, k)
	return k, true
}

// forget takes key out of the line of parked passes: its pass ran and
// needs no slot (nothing was due by then).
func (l *namespaceLimiter) forget(key client.ObjectKey) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lockedForget(key)
}

func (l *namespaceLimiter) lockedForget(key client.ObjectKey) {
	if !l.isParked[key] {
		return
	}
	delete(l.isParked, key)
	q := slices.DeleteFunc(l.parked[key.Namespace], func(k client.ObjectKey) bool { return k == key })
	if len(q) == 0 {
		delete(l.parked, key.Namespace)
		return
	}
	l.parked[key.Namespace] = q
}

// inFlight is how many of ns's slots are taken.
func (l *namespaceLimiter) inFlight(ns string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.inUse[ns])
}

// callsVault tells whether carrying out the plan may call Vault, and so
// needs a slot of the namespace. Promote counts: it revokes at once a
// replaced lease still awaiting revocation.
func (p Plan) callsVault() bool {
	return p.Action == ActFetch || p.Action == ActRenew || p.journalsBusy()
}
