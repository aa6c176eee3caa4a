package syncer

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// RestartedAtAnnotation is stamped on the pod template of a rollout
// target, the way `kubectl rollout restart` does.
const RestartedAtAnnotation = "secrets.vaultkms.io/restartedAt"

// DefaultRestartMinInterval is the default of --restart-min-interval.
const DefaultRestartMinInterval = 30 * time.Second

// workload is one rollout target, resolved to a name.
type workload struct {
	Namespace, Kind, Name string
}

// restarter restarts the rollout targets when a Secret's data changed;
// only new data does, never a metadata change. Restarts are debounced
// per workload: at most one per MinInterval, however many VaultSecrets
// asked, and a request within the interval is carried out at its end
// (never dropped: the new data must reach the pods).
//
// The queue lives in memory; what outlives the process is the
// VaultSecret's status.restartPendingSince, which the reconciler (the one
// writer of status) sets with the new data and clears when state says
// this process carried the restart out. A controller that starts restarts
// only what that field says is owed, never anything else.
type restarter struct {
	Client client.Client
	// APIReader lists the workloads a selector picks (metadata only, not
	// cached: only changed data asks for it).
	APIReader   client.Reader
	Status      *statusRecorder
	Metrics     *Metrics
	Clock       clock.WithTicker
	MinInterval time.Duration

	once  sync.Once
	queue workqueue.TypedRateLimitingInterface[workload]
	mu    sync.Mutex
	last  map[workload]time.Time
	// askers are the VaultSecrets whose new data waits for a restart of
	// the workload, told by event when it happens or fails; by UID, so
	// that a VaultSecret deleted and made again under the same name is not
	// told of a restart it never asked for.
	askers map[workload]map[types.NamespacedName]types.UID
	// owed is, per VaultSecret, the new data's time and the workloads
	// still to restart for it; settled the time of the last new data whose
	// restarts all ended, kept until the reconciler reads it.
	owed    map[types.NamespacedName]*owedRestart
	settled map[types.NamespacedName]time.Time
	// Settled is told the VaultSecret whose restarts all ended, so that
	// its status says so without waiting for its next pass.
	Settled func(types.NamespacedName)
}

type owedRestart struct {
	since time.Time
	left  map[workload]bool
	// resolving counts requests still naming their workloads: a restart
	// that ends meanwhile must not settle what is not all asked yet.
	resolving int
	// unresolved: a selector's list failed for a reason that may pass;
	// the request is dropped instead of settled, so that the pass asks
	// again (status still says pending).
	unresolved bool
}

// restartResolveRetry is how long after a failed selector list the
// VaultSecret's pass asks again.
const restartResolveRetry = 30 * time.Second

// RestartState is what this process knows of a VaultSecret's restarts
// for new data of a given time.
type RestartState int

const (
	// RestartUnknown: this process was never asked (the one that was
	// ended first): the restarts are owed still.
	RestartUnknown RestartState = iota
	// RestartQueued: asked, not all carried out yet.
	RestartQueued
	// RestartSettled: every restart for data this new ended.
	RestartSettled
)

func (r *restarter) init() {
	r.once.Do(func() {
		if r.Clock == nil {
			r.Clock = clock.RealClock{}
		}
		r.queue = workqueue.NewTypedRateLimitingQueueWithConfig(restartRetries(),
			workqueue.TypedRateLimitingQueueConfig[workload]{Name: "vaultkms-restarts", Clock: r.Clock})
		r.last = map[workload]time.Time{}
		r.askers = map[workload]map[types.NamespacedName]types.UID{}
		r.owed = map[types.NamespacedName]*owedRestart{}
		r.settled = map[types.NamespacedName]time.Time{}
	})
}

// state tells where the restarts of key for data new at since stand.
func (r *restarter) state(key types.NamespacedName, since time.Time) RestartState {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.owed[key]; o != nil && !o.since.Before(since) {
		return RestartQueued
	}
	if t, ok := r.settled[key]; ok && !t.Before(since) {
		return RestartSettled
	}
	return RestartUnknown
}

// forget drops what is known of key's restarts once status says none is
// pending (or the VaultSecret is gone); workloads already queued are
// still restarted.
func (r *restarter) forget(key types.NamespacedName) {
	r.init()
	r.mu.Lock()
	delete(r.settled, key)
	if o := r.owed[key]; o != nil {
		for w := range o.left {
			delete(r.askers[w], key)
		}
		delete(r.owed, key)
	}
	r.mu.Unlock()
}

// forgetSettled drops the record of key's settled restarts, leaving any
// restart still owed: called once status says none is pending.
func (r *restarter) forgetSettled(key types.NamespacedName) {
	r.init()
	r.mu.Lock()
	delete(r.settled, key)
	r.mu.Unlock()
}

// request asks for restarts of vs's targets after its data changed at
// since (the time status.restartPendingSince records).
func (r *restarter) request(ctx context.Context, vs *v1alpha1.VaultSecret, since time.Time) {
	r.init()
	key := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
	r.mu.Lock()
	o := r.owed[key]
	if o == nil {
		o = &owedRestart{left: map[workload]bool{}}
		r.owed[key] = o
	}
	if since.After(o.since) {
		o.since = since
	}
	o.resolving++
	r.mu.Unlock()
	for _, t := range vs.Spec.RolloutRestartTargets {
		names, err := r.resolve(ctx, vs.Namespace, t)
		if err != nil {
			r.Status.event(vs, corev1.EventTypeWarning, "RestartFailed", "Restart", "%s selector: %v", t.Kind, err)
			r.Metrics.countRestart(vs.Namespace, t.Kind, "error")
			if retryable(err) {
				r.mu.Lock()
				o.unresolved = true
				r.mu.Unlock()
			}
			continue
		}
		for _, n := range names {
			w := workload{Namespace: vs.Namespace, Kind: t.Kind, Name: n}
			r.mu.Lock()
			if r.askers[w] == nil {
				r.askers[w] = map[types.NamespacedName]types.UID{}
			}
			r.askers[w][key] = vs.UID
			o.left[w] = true
			r.mu.Unlock()
			r.queue.Add(w)
		}
	}
	// Targets that name no workload (a selector matching none, a list
	// that failed and was told) leave nothing to wait for.
	r.mu.Lock()
	o.resolving--
	r.settleIfDone(key)
	r.mu.Unlock()
}

// settleIfDone moves key from owed to settled once no workload is left;
// r.mu is held.
func (r *restarter) settleIfDone(key types.NamespacedName) {
	o := r.owed[key]
	if o == nil || len(o.left) > 0 || o.resolving > 0 {
		return
	}
	delete(r.owed, key)
	if o.unresolved {
		// Not settled: unknown again, so the pass asks anew.
		if r.Settled != nil {
			t := r.Clock.NewTimer(restartResolveRetry)
			go func() { <-t.C(); r.Settled(key) }()
		}
		return
	}
	r.settled[key] = o.since
	if r.Settled != nil {
		// Told outside the lock by a goroutine: the callback may block.
		go r.Settled(key)
	}
}

// resolve names the workloads of one target.
func (r *restarter) resolve(ctx context.Context, ns string, t v1alpha1.RolloutRestartTarget) ([]string, error) {
	if t.Selector == nil {
		return []string{t.Name}, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(t.Selector)
	if err != nil {
		return nil, fmt.Errorf("spec.rolloutRestartTargets selector: %w", err)
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: t.Kind + "List"})
	if err := r.APIReader.List(ctx, list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("list %ss matching %s: %w", t.Kind, sel, err)
	}
	names := make([]string, 0, len(list.Items))
	for _, it := range list.Items {
		names = append(names, it.Name)
	}
	return names, nil
}

// Start runs the restarts until ctx ends (a manager Runnable).
func (r *restarter) Start(ctx context.Context) error {
	r.init()
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	for r.next(ctx) {
	}
	return nil
}

// NeedLeaderElection: only the leader writes.
func (r *restarter) NeedLeaderElection() bool { return true }

// A restart that fails for a reason that may pass (a 5xx, a timeout, an
// API server rolling) is tried again 1 s, 2 s, 4 s ... up to a minute
// apart, maxRestartRetries times after the first try: about five
// minutes, long enough to outlast an API server's restart. The
// controller-runtime default (5 ms doubling) spent all five tries of the
// first version in 155 ms, and the new data never reached the pods.
const (
	restartRetryFirst = time.Second
	restartRetryMax   = time.Minute
	maxRestartRetries = 10
)

// restartRetries spaces the retries of one workload's restart.
func restartRetries() workqueue.TypedRateLimiter[workload] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[workload](restartRetryFirst, restartRetryMax)
}

func (r *restarter) next(ctx context.Context) bool {
	w, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(w)
	now := r.Clock.Now()
	r.mu.Lock()
	wait := RestartWait(now, r.last[w], r.MinInterval)
	r.mu.Unlock()
	if wait > 0 {
		r.queue.AddAfter(w, wait)
		return true
	}
	err := r.patch(ctx, w, now)
	switch {
	case err == nil:
		r.mu.Lock()
		r.last[w] = now
		r.mu.Unlock()
		r.queue.Forget(w)
		r.tell(w, corev1.EventTypeNormal, "Restarted", "%s %q restarted for new Secret data", w.Kind, w.Name)
		r.Metrics.countRestart(w.Namespace, w.Kind, "ok")
	case retryable(err) && r.queue.NumRequeues(w) < maxRestartRetries:
		r.queue.AddRateLimited(w)
	default:
		r.queue.Forget(w)
		r.tell(w, corev1.EventTypeWarning, "RestartFailed", "%s %q: %v", w.Kind, w.Name, err)
		r.Metrics.countRestart(w.Namespace, w.Kind, "error")
	}
	return true
}

// RestartWait is how long a restart of a workload last restarted at last
// must still wait: none for the first, or once minInterval has passed.
func RestartWait(now, last time.Time, minInterval time.Duration) time.Duration {
	if last.IsZero() {
		return 0
	}
	if wait := last.Add(minInterval).Sub(now); wait > 0 {
		return wait
	}
	return 0
}

func retryable(err error) bool {
	return !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err)
}

func (r *restarter) patch(ctx context.Context, w workload, now time.Time) error {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: w.Kind})
	obj.SetNamespace(w.Namespace)
	obj.SetName(w.Name)
	return r.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, RestartPatch(now)))
}

// RestartPatch is the merge patch of a rollout restart: it sets the pod
// template's restart annotation and nothing else, the one change the
// chart's admission policy lets the controller make to a workload.
func RestartPatch(now time.Time) []byte {
	return []byte(fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, RestartedAtAnnotation, formatTime(now)))
}

// tell records an event on every VaultSecret that asked for w's restart
// since the last one.
func (r *restarter) tell(w workload, typ, reason, format string, args ...any) {
	r.mu.Lock()
	askers := r.askers[w]
	delete(r.askers, w)
	for k := range askers {
		if o := r.owed[k]; o != nil {
			delete(o.left, w)
			r.settleIfDone(k)
		}
	}
	r.mu.Unlock()
	for k, uid := range askers {
		vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name, UID: uid}}
		var cur v1alpha1.VaultSecret
		err := r.Client.Get(context.Background(), k, &cur)
		switch {
		case apierrors.IsNotFound(err), err == nil && cur.UID != uid:
			// Deleted since it asked (and perhaps made again under the
			// same name, by someone who asked for nothing): no one to tell.
			continue
		case err == nil:
			vs = &cur
		}
		r.Status.event(vs, typ, reason, "Restart", format, args...)
	}
}
