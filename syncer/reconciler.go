package syncer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
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

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// Finalizer makes deletion wait until leases are revoked (or known ended).
const Finalizer = "secrets.vaultkms.io/revoke-leases"

// Ready condition reasons: each tells the user what to look at.
const (
	ReasonSynced           = "Synced"
	ReasonVaultUnavailable = "VaultUnavailable"
	ReasonPermissionDenied = "PermissionDenied"
	ReasonNotFound         = "SourceNotFound"
	ReasonInvalid          = "InvalidSpec"
	ReasonConflict         = "SecretConflict"
	ReasonExpired          = "Expired"
	ReasonAuthFailed       = "AuthFailed"
	ReasonSecretWrite      = "SecretWriteFailed"
)

// ConditionPreviousRevoked reports the revocation of replaced leases; it is
// False when Vault refuses it, which is a policy to fix, not a retry.
const ConditionPreviousRevoked = "PreviousLeaseRevoked"

var errNotFound = errors.New("no secret at this path")

// Reconciler syncs one VaultSecret: read, decide, write, report.
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
	// ControllerNamespace and ControllerServiceAccount are the controller's
	// own identity, which no VaultSecret may name.
	ControllerNamespace, ControllerServiceAccount string
	// NamespaceSelector, when set, limits the namespaces served.
	NamespaceSelector labels.Selector

	// written holds, per VaultSecret, the resourceVersion of this
	// process's last write to it. A cached copy at that version is
	// current; any other version may predate the write, and is confirmed
	// with the API server before Vault is called.
	written sync.Map // types.NamespacedName -> string
}

var errSecretConflict = errors.New("a Secret of that name exists and is not managed by this VaultSecret")

// SetupWithManager watches VaultSecrets and the Secrets they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		// The controller is the only writer of status, and every pass ends
		// with its own requeue; reacting to its own status writes would
		// retry a failure at once instead of at its back-off — for a
		// dynamic source whose Secret write is refused, a loop issuing a
		// lease per status write.
		For(&v1alpha1.VaultSecret{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return !StatusOnlyUpdate(e.ObjectOld, e.ObjectNew) },
		})).
		Owns(&corev1.Secret{}).
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
	return b.Complete(r)
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
	start := r.Clock.Now()
	// The cached copy is enough to decide that nothing is due, which is
	// most reconciles; before any Vault call sync confirms it is current.
	var vs v1alpha1.VaultSecret
	if err := r.Client.Get(ctx, req.NamespacedName, &vs); err != nil {
		if apierrors.IsNotFound(err) {
			r.written.Delete(req.NamespacedName)
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
		return r.finalize(ctx, &vs)
	}
	kind := kindOf(&vs)
	if kind.leased() && !controllerutil.ContainsFinalizer(&vs, Finalizer) {
		controllerutil.AddFinalizer(&vs, Finalizer)
		if err := r.Client.Update(ctx, &vs); err != nil {
			return ctrl.Result{}, err
		}
		r.written.Store(req.NamespacedName, vs.ResourceVersion)
	}
	res, outcome, err := r.sync(ctx, &vs, kind, false)
	if r.Metrics != nil {
		r.Metrics.sync(kind.name(), outcome, r.Clock.Since(start))
	}
	return res, err
}

// wantedTTL is spec.ttl, 1h when unset (the CRD defaults it too).
func wantedTTL(vs *v1alpha1.VaultSecret) time.Duration {
	if vs.Spec.TTL == nil || vs.Spec.TTL.Duration <= 0 {
		return time.Hour
	}
	return vs.Spec.TTL.Duration
}

func revokeOnDelete(vs *v1alpha1.VaultSecret) bool {
	return vs.Spec.RevokeOnDelete == nil || *vs.Spec.RevokeOnDelete
}

// validate checks what the schema cannot, before anything reaches Vault.
func (r *Reconciler) validate(vs *v1alpha1.VaultSecret) error {
	if k := vs.Spec.Auth.Kubernetes; k != nil && r.ControllerServiceAccount != "" &&
		vs.Namespace == r.ControllerNamespace && k.ServiceAccountName == r.ControllerServiceAccount {
		return fmt.Errorf("spec.auth.kubernetes.serviceAccountName: %q is the controller's own service account; use a service account of the application", k.ServiceAccountName)
	}
	return ValidateTemplates(vs.Spec.Target.Template)
}

// sync does one pass and returns when to come back. confirmed tells that
// vs was read from the API server rather than the cache.
func (r *Reconciler) sync(ctx context.Context, vs *v1alpha1.VaultSecret, kind sourceKind, confirmed bool) (ctrl.Result, string, error) {
	now := r.Clock.Now()
	orig := vs.Status.DeepCopy()
	if err := r.validate(vs); err != nil {
		return r.failed(ctx, vs, orig, now, ReasonInvalid, err)
	}
	name := targetName(vs)
	st := &vs.Status
	if st.SecretName != "" && st.SecretName != name {
		// spec.target.name changed: the old Secret is no longer wanted.
		if err := r.deleteOwned(ctx, vs, st.SecretName); err != nil {
			return ctrl.Result{}, "error", err
		}
		st.SecretName = ""
	}
	var existing corev1.Secret
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: name}, &existing)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, "error", err
	}
	if !exists && (kind.leased() || vs.Spec.Source.PKI != nil || st.SecretName != "") {
		// Not in the cache: either unmanaged (the cache holds only
		// managed Secrets), just created and not cached yet, or absent.
		// Credentials are not issued before that is known. A kv source
		// never synced has no Secret of its own yet: its create finds
		// out, which saves a request per new VaultSecret.
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: name}, &existing); err == nil {
			exists = true
		} else if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, "error", err
		}
	}
	if exists && !metav1.IsControlledBy(&existing, vs) {
		r.setReady(vs, metav1.ConditionFalse, ReasonConflict, fmt.Sprintf("Secret %q exists and is not managed by this VaultSecret; delete it or set spec.target.name", name))
		return ctrl.Result{RequeueAfter: time.Minute}, "conflict", r.writeStatus(ctx, vs, orig)
	}

	edited := exists && st.DataHMAC != "" && dataHMAC(r.HMACKey, existing.Data) != st.DataHMAC
	specChanged := st.ObservedGeneration != vs.Generation
	due := st.RefreshAt == nil || !now.Before(st.RefreshAt.Time) || !exists || edited || specChanged
	if !due && !confirmed && !r.previousDue(vs, now) {
		return r.requeue(vs, now), "unchanged", nil
	}
	if rv, ok := r.written.Load(client.ObjectKeyFromObject(vs)); !confirmed && ok && rv != vs.ResourceVersion {
		// A cached copy may predate the status this controller just
		// wrote; acting on it would read Vault twice (for a dynamic
		// source, issue credentials twice).
		var fresh v1alpha1.VaultSecret
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), &fresh); err != nil {
			return ctrl.Result{}, "error", client.IgnoreNotFound(err)
		}
		if fresh.ResourceVersion != vs.ResourceVersion {
			if !fresh.DeletionTimestamp.IsZero() {
				return ctrl.Result{Requeue: true}, "unchanged", nil
			}
			return r.sync(ctx, &fresh, kindOf(&fresh), true)
		}
	}

	r.handlePrevious(ctx, vs, now)
	if !due {
		return r.requeue(vs, now), "unchanged", r.writeStatus(ctx, vs, orig)
	}
	if kind.leased() && st.Lease != nil && exists && !edited && !specChanged {
		return r.renewOrReissue(ctx, vs, orig, kind, now, &existing)
	}
	r.Log.V(1).Info("reading Vault", "vaultsecret", client.ObjectKeyFromObject(vs), "secretExists", exists, "editedByHand", edited, "specChanged", specChanged)
	if edited {
		r.event(vs, corev1.EventTypeWarning, "Restored", "Sync", "Secret %q was changed by hand; restoring it from Vault", name)
	}
	return r.fetchAndWrite(ctx, vs, orig, kind, now, exists, &existing)
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

// vaultCtx bounds one Vault request.
func (r *Reconciler) vaultCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.VaultTimeout <= 0 {
		return context.WithTimeout(ctx, 10*time.Second)
	}
	return context.WithTimeout(ctx, r.VaultTimeout)
}

// previousDue tells whether a replaced lease waits for revocation now.
func (r *Reconciler) previousDue(vs *v1alpha1.VaultSecret, now time.Time) bool {
	l := vs.Status.Lease
	if l == nil || l.PreviousID == "" {
		return false
	}
	return DecidePrevious(now, timeOf(l.RevokePreviousAt), timeOf(l.PreviousExpiresAt)) != PreviousWait
}

// handlePrevious revokes a replaced lease when due, with back-off on
// failure; it stops at the old lease's own end, and a refusal (403) is
// reported as a condition instead of retried.
func (r *Reconciler) handlePrevious(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time) {
	l := vs.Status.Lease
	if l == nil || l.PreviousID == "" {
		return
	}
	clear := func() {
		l.PreviousID, l.RevokePreviousAt, l.PreviousExpiresAt = "", nil, nil
		vs.Status.RevokeFailures = 0
	}
	switch DecidePrevious(now, timeOf(l.RevokePreviousAt), timeOf(l.PreviousExpiresAt)) {
	case PreviousWait:
		return
	case PreviousForget:
		r.Log.Info("replaced lease ended before it could be revoked", "vaultsecret", client.ObjectKeyFromObject(vs))
		clear()
		return
	}
	err := r.release(ctx, vs, kindOf(vs), l.PreviousID)
	switch {
	case err == nil:
		clear()
		r.setCondition(vs, ConditionPreviousRevoked, metav1.ConditionTrue, "Revoked", "the replaced lease was revoked")
	case vault.Classify(err) == vault.KindDenied:
		clear()
		msg := "Vault refused to revoke the replaced lease; grant update on sys/leases/revoke/<mount>/<path>/* to the role's policy: " + explain(err)
		r.setCondition(vs, ConditionPreviousRevoked, metav1.ConditionFalse, ReasonPermissionDenied, msg)
		r.event(vs, corev1.EventTypeWarning, ReasonPermissionDenied, "Revoke", "%s", msg)
	default:
		vs.Status.RevokeFailures++
		next := metav1.NewTime(now.Add(RevokeBackoff(vs.Status.RevokeFailures)))
		l.RevokePreviousAt = &next
		r.Log.Info("revoking a replaced lease failed; backing off", "vaultsecret", client.ObjectKeyFromObject(vs), "failures", vs.Status.RevokeFailures, "next", next.Time, "error", explain(err))
	}
}

// fetchAndWrite reads the source and writes the Secret.
func (r *Reconciler) fetchAndWrite(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, kind sourceKind, now time.Time, exists bool, existing *corev1.Secret) (ctrl.Result, string, error) {
	tok, err := r.tenant(ctx, vs)
	if err != nil {
		return r.failedLogin(ctx, vs, orig, now, err)
	}
	// From here on credentials may be issued. A shutdown cancels ctx, and
	// a pass cut short after Vault issued would leave them unrecorded: a
	// lease nobody revokes, and another replica issuing again. So once
	// told to stop the pass still gets finishAfterShutdown to finish;
	// controller-runtime waits for running passes before the process
	// exits, and that time is shorter than the leader election Lease, so
	// no other replica acts meanwhile.
	ctx, cancelPass := outliveCancel(ctx, finishAfterShutdown)
	defer cancelPass()
	vctx, cancel := r.vaultCtx(ctx)
	f, err := kind.fetch(vctx, tok.Client, vs)
	cancel()
	r.countVault(err)
	if err != nil {
		return r.failedVault(ctx, vs, orig, now, err)
	}
	data, err := r.shape(vs, f.data)
	if err != nil {
		if f.leaseID != "" {
			r.releaseWith(ctx, tok, kind, f.leaseID)
		}
		return r.failed(ctx, vs, orig, now, ReasonInvalid, err)
	}
	st := &vs.Status
	refreshAt, expiresAt := kind.plan(now, vs, f, tok.Expires)
	if kind.leased() {
		prev := st.Lease
		st.Lease = &v1alpha1.Lease{ID: f.leaseID, IssuedAt: metav1.NewTime(now), ExpiresAt: metav1.NewTime(now.Add(f.leaseDuration)),
			Renewable: f.leaseRenewable, TokenAccessor: tok.Accessor, TokenExpiresAt: ptrTime(tok.Expires)}
		if prev != nil {
			if prev.PreviousID != "" {
				// Two replacements within one grace period: the older
				// one goes now rather than being forgotten.
				r.releaseWith(ctx, tok, kind, prev.PreviousID)
			}
			prevEnd := EffectiveEnd(prev.ExpiresAt.Time, timeOf(prev.TokenExpiresAt))
			var grace *time.Duration
			if vs.Spec.RevokeGracePeriod != nil {
				grace = &vs.Spec.RevokeGracePeriod.Duration
			}
			st.Lease.PreviousID = prev.ID
			st.Lease.RevokePreviousAt = ptrTime(RevokeAt(now, prevEnd, grace))
			st.Lease.PreviousExpiresAt = ptrTime(prevEnd)
			st.RevokeFailures = 0
		}
		// The lease is recorded before the Secret is written, so a failed
		// write never leaves a lease nobody will revoke.
		if err := r.writeStatus(ctx, vs, orig); err != nil {
			r.releaseWith(ctx, tok, kind, f.leaseID)
			return ctrl.Result{}, "error", err
		}
		orig = vs.Status.DeepCopy()
	}
	sum := dataHMAC(r.HMACKey, data)
	changed := st.DataHMAC != "" && st.DataHMAC != sum
	if err := r.writeSecret(ctx, vs, data, expiresAt, exists, existing); errors.Is(err, errSecretConflict) {
		r.setReady(vs, metav1.ConditionFalse, ReasonConflict, fmt.Sprintf("Secret %q exists and is not managed by this VaultSecret; delete it or set spec.target.name", targetName(vs)))
		return ctrl.Result{RequeueAfter: time.Minute}, "conflict", r.writeStatus(ctx, vs, orig)
	} else if err != nil {
		return r.failed(ctx, vs, orig, now, ReasonSecretWrite, err)
	}
	st.DataHMAC, st.SecretName = sum, targetName(vs)
	st.ExpiresAt, st.RefreshAt = ptrTime(expiresAt), ptrTime(refreshAt)
	st.LastSyncTime = ptrTime(now)
	r.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("Secret %q synced; expires at %s", targetName(vs), expiresAt.UTC().Format(time.RFC3339)))
	if changed {
		r.event(vs, corev1.EventTypeNormal, "Rotated", "Rotate", "Secret %q has new data from Vault", targetName(vs))
		r.restartTargets(ctx, vs, now)
	}
	if r.Metrics != nil {
		r.Metrics.expiry.Observe(expiresAt.Sub(now).Seconds())
	}
	return r.requeue(vs, now), "synced", r.writeStatus(ctx, vs, orig)
}

// shape checks Vault's keys and renders the templates.
func (r *Reconciler) shape(vs *v1alpha1.VaultSecret, data map[string][]byte) (map[string][]byte, error) {
	for _, k := range sortedKeys(data) {
		if _, templated := vs.Spec.Target.Template[k]; templated {
			continue
		}
		if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
			return nil, fmt.Errorf("a key from Vault is not a valid Secret key (%s); rename it in Vault", errs[0])
		}
	}
	if len(vs.Spec.Target.Template) == 0 {
		return data, nil
	}
	vars := make(map[string]string, len(data))
	for k, v := range data {
		vars[k] = string(v)
	}
	rendered, err := renderTemplates(vs.Spec.Target.Template, vars, r.Clock.Now)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(data)+len(rendered))
	for k, v := range data {
		if validation.IsConfigMapKey(k) == nil {
			out[k] = v
		}
	}
	for k, v := range rendered {
		out[k] = v
	}
	return out, nil
}

// renewOrReissue keeps a dynamic lease alive, or replaces it.
func (r *Reconciler) renewOrReissue(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, kind sourceKind, now time.Time, existing *corev1.Secret) (ctrl.Result, string, error) {
	st := &vs.Status
	l := st.Lease
	renewedAt := l.IssuedAt.Time
	if st.LastSyncTime != nil && st.LastSyncTime.After(renewedAt) {
		renewedAt = st.LastSyncTime.Time
	}
	ttl := wantedTTL(vs)
	jitter := jitterFor(string(vs.UID))
	facts := func(tokenLive bool) LeaseFacts {
		return LeaseFacts{IssuedAt: l.IssuedAt.Time, RenewedAt: renewedAt, ExpiresAt: l.ExpiresAt.Time, TokenExpiresAt: timeOf(l.TokenExpiresAt),
			TokenLive: tokenLive, TokenUnknown: l.TokenAccessor == "", Renewable: l.Renewable, Wanted: ttl}
	}
	action, at := DecideLease(now, facts(false), jitter)
	if action == LeaseWait {
		st.RefreshAt = ptrTime(at)
		return r.requeue(vs, now), "unchanged", r.writeStatus(ctx, vs, orig)
	}
	tok, err := r.tenant(ctx, vs)
	if err != nil {
		return r.failedLogin(ctx, vs, orig, now, err)
	}
	// The token that created the lease may still be ours (and just
	// renewed): then its end is known anew and may push the lease's.
	live := tok.Accessor != "" && tok.Accessor == l.TokenAccessor
	if live {
		l.TokenExpiresAt = ptrTime(tok.Expires)
		if action, at = DecideLease(now, facts(true), jitter); action == LeaseWait {
			st.RefreshAt = ptrTime(at)
			st.ExpiresAt = ptrTime(EffectiveEnd(l.ExpiresAt.Time, tok.Expires))
			return r.requeue(vs, now), "unchanged", r.writeStatus(ctx, vs, orig)
		}
	}
	if action == LeaseRenew {
		asked := l.ExpiresAt.Sub(renewedAt)
		vctx, cancel := r.vaultCtx(ctx)
		granted, err := kind.renew(vctx, tok.Client, l.ID, asked)
		cancel()
		r.countVault(err)
		if err == nil && !RenewalCutShort(asked, granted) {
			if r.Metrics != nil {
				r.Metrics.leases.WithLabelValues("renewed").Inc()
			}
			l.ExpiresAt = metav1.NewTime(now.Add(granted))
			end := EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt))
			renewedAt = now
			_, refresh := DecideLease(now, facts(live), jitter)
			st.LastSyncTime = ptrTime(now)
			st.RefreshAt, st.ExpiresAt = ptrTime(refresh), ptrTime(end)
			if err := r.annotateExpiry(ctx, existing, end); err != nil {
				return r.failed(ctx, vs, orig, now, ReasonSecretWrite, err)
			}
			r.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("lease renewed until %s", end.UTC().Format(time.RFC3339)))
			return r.requeue(vs, now), "renewed", r.writeStatus(ctx, vs, orig)
		}
		if err != nil && vault.Classify(err) == vault.KindUnavailable {
			return r.failedVault(ctx, vs, orig, now, err)
		}
		why := "max TTL reached"
		if err != nil {
			why = "renewal refused: " + explain(err)
		}
		r.Log.Info("issuing new credentials", "vaultsecret", client.ObjectKeyFromObject(vs), "reason", why, "asked", asked, "granted", granted)
	} else {
		r.Log.Info("issuing new credentials", "vaultsecret", client.ObjectKeyFromObject(vs), "reason", "lease not renewable, its token ends first, or the wanted lifetime (spec.ttl) reached")
	}
	if r.Metrics != nil {
		r.Metrics.leases.WithLabelValues("reissued").Inc()
	}
	return r.fetchAndWrite(ctx, vs, orig, kind, now, true, existing)
}

func (r *Reconciler) writeSecret(ctx context.Context, vs *v1alpha1.VaultSecret, data map[string][]byte, expiresAt time.Time, exists bool, existing *corev1.Secret) error {
	want := buildSecret(vs, data, expiresAt)
	if !exists {
		err := r.Client.Create(ctx, want)
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Secret %s/%s: %w", want.Namespace, want.Name, err)
		}
		// Not in the cache yet, or not managed: look.
		var cur corev1.Secret
		if gerr := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), &cur); gerr != nil {
			return fmt.Errorf("create Secret %s/%s: %w", want.Namespace, want.Name, err)
		}
		if !metav1.IsControlledBy(&cur, vs) {
			return errSecretConflict
		}
		existing = &cur
	}
	if existing.Type != want.Type {
		// A Secret's type is immutable: replace it, exactly the one read.
		uid, rv := existing.UID, existing.ResourceVersion
		if err := r.Client.Delete(ctx, existing, client.Preconditions{UID: &uid, ResourceVersion: &rv}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replace Secret %s/%s to change its type: %w", want.Namespace, want.Name, err)
		}
		if err := r.Client.Create(ctx, want); err != nil {
			return fmt.Errorf("create Secret %s/%s: %w", want.Namespace, want.Name, err)
		}
		return nil
	}
	existing.Labels, existing.Annotations, existing.Data = want.Labels, want.Annotations, want.Data
	existing.StringData = nil
	existing.OwnerReferences = want.OwnerReferences
	if err := r.Client.Update(ctx, existing); err != nil {
		return fmt.Errorf("update Secret %s/%s: %w", want.Namespace, want.Name, err)
	}
	return nil
}

func (r *Reconciler) annotateExpiry(ctx context.Context, s *corev1.Secret, expires time.Time) error {
	patch := client.MergeFromWithOptions(s.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[ExpiresAtAnnotation] = expires.UTC().Format(time.RFC3339)
	if err := r.Client.Patch(ctx, s, patch); err != nil {
		return fmt.Errorf("update expiry of Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// deleteOwned deletes the named Secret only if vs controls it, and only
// the very object checked (UID precondition).
func (r *Reconciler) deleteOwned(ctx context.Context, vs *v1alpha1.VaultSecret, name string) error {
	var s corev1.Secret
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: name}, &s); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(&s, vs) {
		return nil
	}
	uid := s.UID
	if err := r.Client.Delete(ctx, &s, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// explain renders an error for conditions, events and logs without
// secrets: a login error keeps the identity it names.
func explain(err error) string {
	var le *loginError
	if errors.As(err, &le) {
		return le.msg
	}
	return vault.Describe(err)
}

// failedLogin reports a failed login: Vault unreachable is not the
// tenant's fault and is reported as such.
func (r *Reconciler) failedLogin(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, now time.Time, err error) (ctrl.Result, string, error) {
	return r.failed(ctx, vs, orig, now, authFailureReason(err), err)
}

// failedVault reports a Vault failure with the reason it maps to.
func (r *Reconciler) failedVault(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, now time.Time, err error) (ctrl.Result, string, error) {
	reason := ReasonVaultUnavailable
	switch {
	case errors.Is(err, errNotFound) || vault.Classify(err) == vault.KindNotFound:
		reason = ReasonNotFound
	case vault.Classify(err) == vault.KindDenied:
		reason = ReasonPermissionDenied
		r.Tenants.Forget(tenantKeyFor(vs))
	case vault.Classify(err) == vault.KindInvalid:
		reason = ReasonInvalid
	}
	return r.failed(ctx, vs, orig, now, reason, err)
}

// failed records a failed refresh. Deleting the Secret at its expiry is
// the Expirer's job, which does not wait on this path.
func (r *Reconciler) failed(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus, now time.Time, reason string, err error) (ctrl.Result, string, error) {
	msg := explain(err)
	if vs.Status.ExpiresAt != nil && Expired(now, vs.Status.ExpiresAt.Time) {
		reason, msg = ReasonExpired, fmt.Sprintf("Secret deleted at expiry (%s); refresh keeps failing: %s: %s", vs.Status.ExpiresAt.UTC().Format(time.RFC3339), reason, msg)
	}
	// Back off only on failures of this generation: a spec change is
	// retried promptly even after a long run of failures.
	failingSince := FailingSince(meta.FindStatusCondition(vs.Status.Conditions, "Ready"), vs.Generation)
	if failingSince.IsZero() {
		r.event(vs, corev1.EventTypeWarning, reason, "Sync", "%s", msg)
	}
	r.setReady(vs, metav1.ConditionFalse, reason, msg)
	if failingSince.IsZero() {
		// The first failure of this generation starts the count, even when
		// Ready was already False for an older spec (SetStatusCondition
		// keeps lastTransitionTime while the status stays False): else the
		// next retries of a new spec would back off as if it had been
		// failing all along.
		meta.FindStatusCondition(vs.Status.Conditions, "Ready").LastTransitionTime = metav1.NewTime(now)
	}
	var expiresAt time.Time
	if vs.Status.ExpiresAt != nil {
		expiresAt = vs.Status.ExpiresAt.Time
	}
	retry := RetryAfter(now, failingSince, expiresAt)
	if l := vs.Status.Lease; l != nil && l.RevokePreviousAt != nil && l.RevokePreviousAt.After(now) {
		retry = min(retry, l.RevokePreviousAt.Sub(now))
	}
	return ctrl.Result{RequeueAfter: retry}, "failed", r.writeStatus(ctx, vs, orig)
}

func (r *Reconciler) requeue(vs *v1alpha1.VaultSecret, now time.Time) ctrl.Result {
	var prev time.Time
	if l := vs.Status.Lease; l != nil && l.RevokePreviousAt != nil {
		prev = l.RevokePreviousAt.Time
	}
	wake := NextWake(timeOf(vs.Status.RefreshAt), timeOf(vs.Status.ExpiresAt), prev)
	if wake.IsZero() {
		return ctrl.Result{RequeueAfter: time.Minute}
	}
	return ctrl.Result{RequeueAfter: max(100*time.Millisecond, wake.Sub(now))}
}

func (r *Reconciler) setReady(vs *v1alpha1.VaultSecret, status metav1.ConditionStatus, reason, msg string) {
	r.setCondition(vs, "Ready", status, reason, msg)
	vs.Status.ObservedGeneration = vs.Generation
}

func (r *Reconciler) setCondition(vs *v1alpha1.VaultSecret, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: vs.Generation,
		LastTransitionTime: metav1.NewTime(r.Clock.Now()),
	})
}

// writeStatus writes vs's status when it differs from orig. The controller
// is the status's only writer, so on a conflict (a stale copy) it
// reapplies the same status to the latest object: losing it would forget a
// lease.
func (r *Reconciler) writeStatus(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus) error {
	if orig != nil && equality.Semantic.DeepEqual(*orig, vs.Status) {
		return nil
	}
	st := vs.Status.DeepCopy()
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), vs); err != nil {
				return err
			}
			vs.Status = *st
		}
		first = false
		return r.Client.Status().Update(ctx, vs)
	})
	if err == nil {
		r.written.Store(client.ObjectKeyFromObject(vs), vs.ResourceVersion)
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update status of VaultSecret %s/%s: %w", vs.Namespace, vs.Name, err)
	}
	return nil
}

func (r *Reconciler) event(vs *v1alpha1.VaultSecret, typ, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(vs, nil, typ, reason, action, format, args...)
	}
}

// finalize revokes the lease, when there is one still alive to revoke and
// revocation is wanted, and lets the VaultSecret go. No finalizer outlives
// the lease it guards; errors that retrying cannot fix end it with an
// event, and Vault being unreachable is retried with back-off until the
// lease ends on its own.
func (r *Reconciler) finalize(ctx context.Context, vs *v1alpha1.VaultSecret) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vs, Finalizer) {
		return ctrl.Result{}, nil
	}
	now := r.Clock.Now()
	kind := kindOf(vs)
	if l := vs.Status.Lease; l != nil {
		end := EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt))
		if DecideFinalize(now, true, revokeOnDelete(vs), end) == FinalizeRelease {
			ids := []string{l.ID}
			if l.PreviousID != "" && DecidePrevious(now, time.Time{}, timeOf(l.PreviousExpiresAt)) != PreviousForget {
				ids = append(ids, l.PreviousID)
			}
			for _, id := range ids {
				err := r.release(ctx, vs, kind, id)
				if err == nil {
					continue
				}
				if vault.Classify(err) == vault.KindUnavailable {
					if d := FinalizeRetryAfter(now, vs.DeletionTimestamp.Time, end); d > 0 {
						orig := vs.Status.DeepCopy()
						r.setReady(vs, metav1.ConditionFalse, ReasonVaultUnavailable, "cannot revoke the lease before deletion; retrying until it ends at "+end.UTC().Format(time.RFC3339)+": "+explain(err))
						return ctrl.Result{RequeueAfter: d}, r.writeStatus(ctx, vs, orig)
					}
				}
				r.event(vs, corev1.EventTypeWarning, "LeaseNotRevoked", "Revoke",
					"lease not revoked (%s); it ends on its own at %s", explain(err), end.UTC().Format(time.RFC3339))
				break
			}
		}
	}
	if err := r.deleteOwned(ctx, vs, targetName(vs)); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur v1alpha1.VaultSecret
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		r.written.Delete(client.ObjectKeyFromObject(vs))
		if !controllerutil.RemoveFinalizer(&cur, Finalizer) {
			return nil
		}
		return client.IgnoreNotFound(r.Client.Update(ctx, &cur))
	})
}

// release revokes a lease under the tenant's identity, within the Vault
// deadline.
func (r *Reconciler) release(ctx context.Context, vs *v1alpha1.VaultSecret, kind sourceKind, id string) error {
	tok, err := r.tenant(ctx, vs)
	if err != nil {
		return err
	}
	vctx, cancel := r.vaultCtx(ctx)
	defer cancel()
	err = kind.release(vctx, tok.Client, id)
	r.countVault(err)
	if err == nil && r.Metrics != nil {
		r.Metrics.leases.WithLabelValues("revoked").Inc()
	}
	return err
}

// releaseWith revokes a lease just issued that will not be used; failure
// is logged, since the lease then ends on its own.
func (r *Reconciler) releaseWith(ctx context.Context, tok *TenantToken, kind sourceKind, id string) {
	vctx, cancel := r.vaultCtx(ctx)
	defer cancel()
	err := kind.release(vctx, tok.Client, id)
	r.countVault(err)
	if err != nil {
		r.Log.Info("revoking an unused lease failed; it ends on its own", "error", explain(err))
	}
}

func tenantKeyFor(vs *v1alpha1.VaultSecret) tenantKey {
	if a := vs.Spec.Auth.AppRole; a != nil {
		return tenantKey{Namespace: vs.Namespace, Role: "approle-secret:" + a.SecretRef, Mount: orDefault(a.Mount, "approle")}
	}
	k := vs.Spec.Auth.Kubernetes
	if k == nil {
		return tenantKey{Namespace: vs.Namespace}
	}
	mount := k.Mount
	if mount == "" {
		mount = "kubernetes"
	}
	return tenantKey{Namespace: vs.Namespace, ServiceAccount: k.ServiceAccountName, Role: k.Role, Mount: mount}
}

func (r *Reconciler) tenant(ctx context.Context, vs *v1alpha1.VaultSecret) (*TenantToken, error) {
	if k := vs.Spec.Auth.Kubernetes; k != nil {
		return r.Tenants.Client(ctx, tenantKeyFor(vs), k.Audiences)
	}
	return r.appRoleClient(ctx, vs)
}

// appRoleClient logs in with the role and secret IDs in the tenant's own
// Secret; its tokens are cached per (namespace, Secret, mount) like service
// account tokens.
func (r *Reconciler) appRoleClient(ctx context.Context, vs *v1alpha1.VaultSecret) (*TenantToken, error) {
	return r.Tenants.ClientFor(ctx, tenantKeyFor(vs), func(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
		a := vs.Spec.Auth.AppRole
		var s corev1.Secret
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: a.SecretRef}, &s); err != nil {
			return nil, fmt.Errorf("spec.auth.appRole.secretRef %q: %w", a.SecretRef, err)
		}
		roleKey, secretKey := orDefault(a.RoleIDKey, "role-id"), orDefault(a.SecretIDKey, "secret-id")
		if len(s.Data[roleKey]) == 0 || len(s.Data[secretKey]) == 0 {
			return nil, fmt.Errorf("spec.auth.appRole: Secret %q needs keys %q and %q", a.SecretRef, roleKey, secretKey)
		}
		sec, err := c.Logical().WriteWithContext(ctx, "auth/"+orDefault(a.Mount, "approle")+"/login", map[string]any{"role_id": string(s.Data[roleKey]), "secret_id": string(s.Data[secretKey])})
		if err != nil {
			return nil, &loginError{msg: fmt.Sprintf("vault approle login with Secret %s/%s: %s", vs.Namespace, a.SecretRef, vault.Describe(err)), err: err}
		}
		if sec == nil || sec.Auth == nil {
			return nil, fmt.Errorf("vault approle login with Secret %s/%s: no token in the answer", vs.Namespace, a.SecretRef)
		}
		return sec.Auth, nil
	})
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// restartTargets stamps the pod templates of the rollout targets, the way
// `kubectl rollout restart` does.
func (r *Reconciler) restartTargets(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time) {
	for _, t := range vs.Spec.RolloutRestartTargets {
		var obj client.Object
		switch t.Kind {
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "DaemonSet":
			obj = &appsv1.DaemonSet{}
		default:
			continue
		}
		ts := now.UTC().Format(time.RFC3339)
		patch := []byte(fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"secrets.vaultkms.io/restartedAt":%q}}}}}`, ts))
		obj.SetNamespace(vs.Namespace)
		obj.SetName(t.Name)
		if err := r.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
			r.event(vs, corev1.EventTypeWarning, "RestartFailed", "Restart", "%s %q: %v", t.Kind, t.Name, err)
			continue
		}
		r.event(vs, corev1.EventTypeNormal, "Restarted", "Restart", "%s %q restarted for new Secret data", t.Kind, t.Name)
	}
}

func (r *Reconciler) countVault(err error) {
	if r.Metrics == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = vault.Classify(err).String()
	}
	r.Metrics.vault.WithLabelValues(res).Inc()
}

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

func ptrTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t)
	return &mt
}
