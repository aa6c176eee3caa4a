package syncer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// Reconciler syncs one VaultSecret per pass: observe (one place), decide
// (Decide, pure), act (Vault I/O, the lease journal, the Secret writer,
// the status recorder, the restarter, the finalizer: each its own part).
type Reconciler struct {
	Client client.Client
	// APIReader reads around the cache, which holds only managed Secrets.
	APIReader client.Reader
	Tenants   *Tenants
	Clock     clock.PassiveClock
	Recorder  events.EventRecorder
	HMACKey   []byte
	Metrics   *Metrics
	Log       logr.Logger
	// Workers is the number of VaultSecrets reconciled at once, so one
	// slow tenant or Vault path does not hold up the others.
	Workers int
	// VaultTimeout bounds every Vault request.
	VaultTimeout time.Duration
	// FinalizerTimeout bounds how long deletion waits for an unreachable
	// Vault to revoke leases (default DefaultFinalizerTimeout).
	FinalizerTimeout time.Duration
	// ControllerNamespace and ControllerServiceAccount are the controller's
	// own identity, which no VaultSecret may name.
	ControllerNamespace, ControllerServiceAccount string
	// RestartMinInterval is the least time between two rollout restarts
	// of one workload (--restart-min-interval).
	RestartMinInterval time.Duration
	// NamespaceSelector, when set, limits the namespaces served.
	NamespaceSelector labels.Selector
	// Writes, when set, makes the Secret creates and applies and the
	// status writes, with answers of metadata only; else Client does.
	Writes *MetadataAnswers

	once      sync.Once
	validator validator
	vault     *vaultIO
	secrets   *secretWriter
	status    *statusRecorder
	restarts  *restarter
	finalizer *finalizer
	// slots bounds the passes of one namespace calling Vault at once;
	// a pass that found none is enqueued again through unparked when one
	// frees.
	slots    *namespaceLimiter
	unparked chan event.GenericEvent
	// auths logs in as VaultAuths, one cached token each.
	auths *sharedAuths

	// written holds, per VaultSecret, the resourceVersion of this
	// process's last write to it. A cached copy at that version is
	// current; any other version may predate the write, and is confirmed
	// with the API server before Vault is called.
	written sync.Map // types.NamespacedName -> string
	// restores holds recent restores of hand-edited Secrets.
	restores sync.Map // types.NamespacedName -> restoreRecord
	// seen holds, per VaultSecret, the source hash of this process's last
	// completed pass: a hash that moved without the generation is a nudge
	// (see Observed.Nudge).
	seen sync.Map // types.NamespacedName -> string
	// secretWrites holds, per Secret, the resourceVersion of this
	// process's last write of it, until the watch brings that version
	// back: a pass for it would find exactly what the write left.
	secretWrites sync.Map // types.NamespacedName -> string
	// recheck holds the VaultSecrets whose presumed-absent Secret was
	// found to exist: their next pass reads it from the API server.
	recheck sync.Map // types.NamespacedName -> struct{}
}

// parts builds the reconciler's parts from its fields, once.
func (r *Reconciler) parts() {
	r.once.Do(func() {
		r.slots = newBurstLimiter(NamespaceSlots(r.Workers), NamespaceBurst(r.Workers), r.Clock.Now)
		r.unparked = make(chan event.GenericEvent, unparkedBuffer)
		r.slots.wake = r.unpark
		r.validator = validator{ControllerNamespace: r.ControllerNamespace, ControllerServiceAccount: r.ControllerServiceAccount, Tenants: r.Tenants}
		r.auths = newSharedAuths(r.Tenants, r.Client, r.APIReader, r.ControllerNamespace, r.ControllerServiceAccount)
		r.vault = &vaultIO{Tenants: r.Tenants, Auths: r.auths, APIReader: r.APIReader, Timeout: r.VaultTimeout, Metrics: r.Metrics, Log: r.Log}
		r.secrets = &secretWriter{Client: r.Client, APIReader: r.APIReader,
			wrote: func(k client.ObjectKey, rv string) { r.secretWrites.Store(k, rv) }}
		r.status = &statusRecorder{Client: r.Client, APIReader: r.APIReader, Clock: r.Clock, Recorder: r.Recorder,
			wrote: func(k client.ObjectKey, rv string) { r.written.Store(k, rv) }}
		if r.Writes != nil {
			r.secrets.createAs, r.secrets.applyAs, r.status.update = r.Writes.CreateSecret, r.Writes.ApplySecret, r.Writes.UpdateStatus
		}
		tick, ok := r.Clock.(clock.WithTicker)
		if !ok {
			tick = clock.RealClock{}
		}
		r.restarts = &restarter{Client: r.Client, APIReader: r.APIReader, Status: r.status, Metrics: r.Metrics, Clock: tick,
			MinInterval: r.RestartMinInterval, Settled: r.unpark}
		r.finalizer = &finalizer{Client: r.Client, APIReader: r.APIReader, Vault: r.vault, Secrets: r.secrets, Status: r.status,
			Metrics: r.Metrics, Clock: r.Clock, Timeout: r.FinalizerTimeout, Slots: r.slots, forget: r.forget}
	})
}

// unparkedBuffer bounds the wakes waiting for the controller's queue; a
// wake that finds it full is dropped, and its pass comes back at its
// requeue instead.
const unparkedBuffer = 1024

// unpark enqueues a pass deferred for want of a slot.
func (r *Reconciler) unpark(k client.ObjectKey) {
	select {
	case r.unparked <- event.GenericEvent{Object: &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name}}}:
	default:
	}
}

func (r *Reconciler) forget(k client.ObjectKey) {
	r.written.Delete(k)
	r.restores.Delete(k)
	r.seen.Delete(k)
	r.recheck.Delete(k)
	r.restarts.forget(k)
}

// SetupWithManager watches VaultSecrets and the Secrets they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.parts()
	b := ctrl.NewControllerManagedBy(mgr).
		// The controller is the only writer of status, and every pass ends
		// with its own requeue; reacting to its own status writes would
		// retry a failure at once instead of at its back-off.
		For(&v1alpha1.VaultSecret{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return !StatusOnlyUpdate(e.ObjectOld, e.ObjectNew) },
		})).
		// A Secret's own write coming back through the watch needs no
		// pass; any other change of it (an edit, a deletion) does.
		Owns(&corev1.Secret{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return !r.ownSecretWrite(e.Object) },
			UpdateFunc: func(e event.UpdateEvent) bool { return !r.ownSecretWrite(e.ObjectNew) },
		})).
		Named("vaultsecret").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.Workers)})
	if r.NamespaceSelector != nil {
		// A namespace that starts or stops matching is looked at again.
		b = b.Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var list v1alpha1.VaultSecretList
			if err := r.Client.List(ctx, &list, client.InNamespace(o.GetName())); err != nil {
				return nil
			}
			out := make([]reconcile.Request, 0, len(list.Items))
			for _, vs := range list.Items {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vs)})
			}
			return out
		}))
	}
	b = b.WatchesRawSource(source.Channel(r.unparked, &handler.EnqueueRequestForObject{}))
	if err := mgr.Add(r.restarts); err != nil {
		return fmt.Errorf("add the rollout restarter: %w", err)
	}
	b, err := r.withVaultAuths(mgr, b)
	if err != nil {
		return err
	}
	return b.Complete(r)
}

// ownSecretWrite tells whether o is the very version of a Secret this
// process last wrote, and forgets that write once its event is seen.
func (r *Reconciler) ownSecretWrite(o client.Object) bool {
	k := client.ObjectKeyFromObject(o)
	rv := o.GetResourceVersion()
	return rv != "" && r.secretWrites.CompareAndDelete(k, rv)
}

// StatusOnlyUpdate tells whether an update of a VaultSecret changed nothing
// but its status (and resourceVersion): no spec, labels, annotations,
// finalizers or deletion.
func StatusOnlyUpdate(old, cur client.Object) bool {
	if old == nil || cur == nil {
		return false
	}
	return old.GetGeneration() == cur.GetGeneration() &&
		equality.Semantic.DeepEqual(old.GetLabels(), cur.GetLabels()) &&
		equality.Semantic.DeepEqual(old.GetAnnotations(), cur.GetAnnotations()) &&
		equality.Semantic.DeepEqual(old.GetFinalizers(), cur.GetFinalizers()) &&
		equality.Semantic.DeepEqual(old.GetDeletionTimestamp(), cur.GetDeletionTimestamp())
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.parts()
	start := r.Clock.Now()
	// The cached copy is enough to decide that nothing is due, which is
	// most reconciles; before acting, pass confirms it is current.
	var vs v1alpha1.VaultSecret
	if err := r.Client.Get(ctx, req.NamespacedName, &vs); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.NamespaceSelector != nil {
		var ns corev1.Namespace
		if err := r.Client.Get(ctx, types.NamespacedName{Name: vs.Namespace}, &ns); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		// A namespace not (or no longer) selected is not served: nothing
		// is read from Vault and nothing is written, not even status, since
		// another controller may serve it. What was issued runs out on its
		// own: the Expirer, which serves every managed Secret, still deletes
		// it at its expires-at. A deletion is still finalized, so a
		// finalizer added while the namespace was served never hangs.
		if !r.NamespaceSelector.Matches(labels.Set(ns.Labels)) && vs.DeletionTimestamp.IsZero() {
			r.Log.V(1).Info("namespace not selected; not served", "vaultsecret", req.NamespacedName.String())
			return ctrl.Result{}, nil
		}
	}
	if !vs.DeletionTimestamp.IsZero() {
		return r.finalizer.finalize(ctx, &vs)
	}
	kind := kindOf(&vs)
	if kind.leased() && !controllerutil.ContainsFinalizer(&vs, Finalizer) {
		controllerutil.AddFinalizer(&vs, Finalizer)
		if err := r.Client.Update(ctx, &vs); err != nil {
			return ctrl.Result{}, err
		}
		r.written.Store(req.NamespacedName, vs.ResourceVersion)
	}
	res, outcome, err := r.pass(ctx, &vs, false)
	if r.Metrics != nil {
		r.Metrics.sync(kind.name(), outcome, r.Clock.Since(start))
	}
	return res, err
}

// pass observes, decides and acts once. confirmed tells that vs was read
// from the API server rather than the cache.
func (r *Reconciler) pass(ctx context.Context, vs *v1alpha1.VaultSecret, confirmed bool) (ctrl.Result, string, error) {
	now := r.Clock.Now()
	o, err := r.observe(ctx, vs)
	if err != nil {
		return ctrl.Result{}, "error", err
	}
	p := Decide(o.Observed, now)
	if !confirmed && p.writes() {
		// A cached copy may predate the status this controller just
		// wrote; acting on it would read Vault twice (for a dynamic
		// source, issue credentials twice).
		if rv, ok := r.written.Load(client.ObjectKeyFromObject(vs)); ok && rv != vs.ResourceVersion {
			var fresh v1alpha1.VaultSecret
			if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), &fresh); err != nil {
				return ctrl.Result{}, "error", client.IgnoreNotFound(err)
			}
			if fresh.ResourceVersion != vs.ResourceVersion {
				if !fresh.DeletionTimestamp.IsZero() {
					return ctrl.Result{Requeue: true}, "unchanged", nil
				}
				return r.pass(ctx, &fresh, true)
			}
		}
	}
	if p.callsVault() {
		release, ok := r.slots.tryAcquireOrPark(client.ObjectKeyFromObject(vs))
		if !ok {
			// Nothing was done and nothing is recorded: the pass is only
			// deferred, its worker left to other namespaces, until a slot
			// of its namespace frees (or its requeue comes first).
			r.Log.V(1).Info("namespace at its limit of passes calling Vault; retrying shortly", "vaultsecret", client.ObjectKeyFromObject(vs), "why", p.Why)
			wait := ctrl.Result{RequeueAfter: ThrottleDelay(jitterFor(string(vs.UID)))}
			if ReadyButMissing(vs, o.Secret != nil) {
				// Deferring the pass must not leave Ready describing a
				// Secret that no longer exists.
				orig := vs.Status.DeepCopy()
				reason, msg := ReasonSecretMissing, fmt.Sprintf("Secret %q does not exist; it is written again at this VaultSecret's next turn to read Vault (its namespace is at its limit of passes calling Vault)", targetName(vs))
				if exp := timeOf(vs.Status.ExpiresAt); Expired(now, exp) {
					// Gone at its expiry: say so, as the Expirer does.
					reason, msg = ReasonExpired, fmt.Sprintf("Secret %q deleted at its expiry (%s) without a successful refresh; the next successful read writes it again", targetName(vs), formatTime(exp))
				}
				r.status.setReady(vs, metav1.ConditionFalse, reason, msg)
				if err := r.status.write(ctx, vs, orig); err != nil {
					return ctrl.Result{}, "error", err
				}
			}
			return wait, "throttled", nil
		}
		defer release()
		o.doneWithVault = release
	} else {
		r.slots.forget(client.ObjectKeyFromObject(vs))
	}
	res, outcome, err := r.act(ctx, o, p, now)
	if err == nil {
		r.seen.Store(client.ObjectKeyFromObject(vs), o.SourceHash)
		// A pass that ended without error wrote its status (or had none
		// to write); one that failed is done again by the next, which
		// tells it then.
		for _, tell := range o.told {
			tell()
		}
	}
	return res, outcome, err
}

// ReadyButMissing tells whether status says Ready while the Secret it
// describes does not exist.
func ReadyButMissing(vs *v1alpha1.VaultSecret, secretExists bool) bool {
	return !secretExists && meta.IsStatusConditionTrue(vs.Status.Conditions, "Ready")
}

// writes tells whether a plan writes anything beyond status, or records
// in status a write the Secret holds: a cached copy older than this
// controller's last status write would take its own recorded write for
// one it lost.
func (p Plan) writes() bool {
	return p.Action == ActFetch || p.Action == ActRenew || p.Action == ActWriteMetadata || p.RecordWrite || p.journalsBusy()
}

// journalsBusy tells whether a journal plan, spec.source's or one of
// spec.sources', calls Vault.
func (p Plan) journalsBusy() bool {
	if p.JournalPlan.busy() {
		return true
	}
	for _, sp := range p.Sources {
		if sp.busy() {
			return true
		}
	}
	return false
}

// requeueAt is the result for waking at t (a minute when t is zero).
func requeueAt(now, t time.Time) ctrl.Result {
	if t.IsZero() {
		return ctrl.Result{RequeueAfter: time.Minute}
	}
	return ctrl.Result{RequeueAfter: max(100*time.Millisecond, t.Sub(now))}
}

// finishAfterShutdown bounds a pass that has started issuing credentials
// once the process is told to stop; it is below the 15 s leader election
// Lease (controller-runtime's default), which the stopping leader keeps
// until it exits.
const finishAfterShutdown = 10 * time.Second

// outliveCancel returns a context that ends grace after ctx is canceled
// (or when the returned cancel is called), not at once; ctx's values carry
// over. Until ctx ends it adds no deadline of its own.
func outliveCancel(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	detached, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		// Real time: this paces a shutdown, not the reconcile logic.
		t := time.AfterFunc(grace, cancel)
		context.AfterFunc(detached, func() { t.Stop() })
	})
	return detached, func() { stop(); cancel() }
}

// wantedTTL is spec.ttl, 1h when unset (the CRD defaults it too).
func wantedTTL(vs *v1alpha1.VaultSecret) time.Duration {
	if vs.Spec.TTL == nil || vs.Spec.TTL.Duration <= 0 {
		return time.Hour
	}
	return vs.Spec.TTL.Duration
}

// refreshInterval is spec.refreshInterval, zero when unset.
func refreshInterval(vs *v1alpha1.VaultSecret) time.Duration {
	if vs.Spec.RefreshInterval == nil {
		return 0
	}
	return vs.Spec.RefreshInterval.Duration
}

func retained(vs *v1alpha1.VaultSecret) bool {
	if vs.Spec.ExpiryPolicy != v1alpha1.ExpiryRetain {
		return false
	}
	for _, src := range vs.Spec.Sources {
		if src.KV == nil {
			return false
		}
	}
	return len(vs.Spec.Sources) > 0 || vs.Spec.Source.KV != nil
}
