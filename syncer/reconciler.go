package syncer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// Finalizer makes deletion wait until leases are revoked.
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
)

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
}

// SetupWithManager watches VaultSecrets and the Secrets they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.VaultSecret{}).
		Owns(&corev1.Secret{}).
		Named("vaultsecret").
		Complete(r)
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	start := r.Clock.Now()
	// Read around the cache: a cached copy may predate the status this
	// controller just wrote, and acting on it would fetch again (for a
	// dynamic source, issue credentials twice).
	var vs v1alpha1.VaultSecret
	if err := r.APIReader.Get(ctx, req.NamespacedName, &vs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !vs.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &vs)
	}
	if vs.Spec.Source.Dynamic != nil && controllerutil.AddFinalizer(&vs, Finalizer) {
		if err := r.Client.Update(ctx, &vs); err != nil {
			return ctrl.Result{}, err
		}
	}
	res, outcome, err := r.sync(ctx, &vs)
	if r.Metrics != nil {
		r.Metrics.sync(sourceKind(&vs), outcome, r.Clock.Since(start))
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

func sourceKind(vs *v1alpha1.VaultSecret) string {
	switch {
	case vs.Spec.Source.Dynamic != nil:
		return "dynamic"
	case vs.Spec.Source.PKI != nil:
		return "pki"
	}
	return "kv"
}

// sync does one pass and returns when to come back.
func (r *Reconciler) sync(ctx context.Context, vs *v1alpha1.VaultSecret) (ctrl.Result, string, error) {
	now := r.Clock.Now()
	name := targetName(vs)
	var existing corev1.Secret
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: name}, &existing)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		// The cache holds only managed Secrets; an unmanaged one is
		// looked up directly to tell a conflict from absence.
		return ctrl.Result{}, "error", err
	}
	if !exists {
		// Not in the cache: either unmanaged (the cache holds only
		// managed Secrets), just created and not cached yet, or absent.
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: name}, &existing); err == nil {
			exists = true
		} else if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, "error", err
		}
	}
	if exists && !ownedBy(&existing, vs) {
		r.setReady(vs, metav1.ConditionFalse, ReasonConflict, fmt.Sprintf("Secret %q exists and is not managed by this VaultSecret; delete it or set spec.target.name", name))
		return ctrl.Result{RequeueAfter: time.Minute}, "conflict", r.writeStatus(ctx, vs)
	}

	st := &vs.Status
	edited := exists && st.DataHMAC != "" && dataHMAC(r.HMACKey, existing.Data) != st.DataHMAC
	specChanged := st.ObservedGeneration != vs.Generation
	due := st.RefreshAt == nil || !now.Before(st.RefreshAt.Time) || !exists || edited || specChanged

	// A replaced lease past its grace period is revoked first.
	if l := st.Lease; l != nil && l.PreviousID != "" && l.RevokePreviousAt != nil && !now.Before(l.RevokePreviousAt.Time) {
		if err := r.revoke(ctx, vs, l.PreviousID); err != nil {
			r.Log.Info("revoking a replaced lease failed; will retry", "vaultsecret", client.ObjectKeyFromObject(vs), "error", vault.Describe(err))
		} else {
			l.PreviousID, l.RevokePreviousAt = "", nil
		}
	}

	if !due {
		return r.requeue(vs, now), "unchanged", r.writeStatus(ctx, vs)
	}
	if vs.Spec.Source.Dynamic != nil && st.Lease != nil && exists && !edited && !specChanged {
		return r.renewOrReissue(ctx, vs, now)
	}
	r.Log.V(1).Info("reading Vault", "vaultsecret", client.ObjectKeyFromObject(vs), "secretExists", exists, "editedByHand", edited, "specChanged", specChanged)
	if edited {
		r.event(vs, corev1.EventTypeWarning, "Restored", "Sync", "Secret %q was changed by hand; restoring it from Vault", name)
	}
	return r.fetchAndWrite(ctx, vs, now, exists, &existing)
}

// fetchAndWrite reads the source and writes the Secret.
func (r *Reconciler) fetchAndWrite(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time, exists bool, existing *corev1.Secret) (ctrl.Result, string, error) {
	c, err := r.tenantClient(ctx, vs)
	if err != nil {
		return r.failed(ctx, vs, now, authFailureReason(err), err)
	}
	ttl := wantedTTL(vs)
	var f fetched
	switch {
	case vs.Spec.Source.KV != nil:
		f, err = readKV(ctx, c, vs.Spec.Source.KV)
	case vs.Spec.Source.Dynamic != nil:
		f, err = readDynamic(ctx, c, vs.Spec.Source.Dynamic)
	case vs.Spec.Source.PKI != nil:
		f, err = issuePKI(ctx, c, vs.Spec.Source.PKI, ttl)
	}
	r.countVault(err)
	if err != nil {
		return r.failedVault(ctx, vs, now, err)
	}
	data, err := renderData(vs, f.data)
	if err != nil {
		if f.leaseID != "" {
			_ = revokeLease(ctx, c, f.leaseID)
		}
		return r.failed(ctx, vs, now, ReasonInvalid, err)
	}
	st := &vs.Status
	var refreshAt, expiresAt time.Time
	jitter := jitterFor(string(vs.UID))
	switch {
	case vs.Spec.Source.KV != nil:
		refreshAt, expiresAt = KVPlan(now, ttl, jitter)
	case vs.Spec.Source.PKI != nil:
		refreshAt, expiresAt = PKIPlan(f.notBefore, f.notAfter, jitter)
	default:
		expiresAt = now.Add(f.leaseDuration)
		_, refreshAt = DecideLease(now, LeaseFacts{IssuedAt: now, RenewedAt: now, ExpiresAt: expiresAt, Renewable: f.leaseRenewable, Wanted: ttl}, jitter)
		prev := ""
		if st.Lease != nil {
			prev = st.Lease.ID
		}
		st.Lease = &v1alpha1.Lease{ID: f.leaseID, IssuedAt: metav1.NewTime(now), ExpiresAt: metav1.NewTime(expiresAt), Renewable: f.leaseRenewable}
		if prev != "" {
			var grace *time.Duration
			if vs.Spec.RevokeGracePeriod != nil {
				grace = &vs.Spec.RevokeGracePeriod.Duration
			}
			at := metav1.NewTime(RevokeAt(now, f.leaseDuration, grace))
			st.Lease.PreviousID, st.Lease.RevokePreviousAt = prev, &at
		}
	}
	sum := dataHMAC(r.HMACKey, data)
	changed := st.DataHMAC != "" && st.DataHMAC != sum
	if err := r.writeSecret(ctx, vs, data, expiresAt, exists, existing); err != nil {
		return ctrl.Result{}, "error", err
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
	return r.requeue(vs, now), "synced", r.writeStatus(ctx, vs)
}

// renewOrReissue keeps a dynamic lease alive, or replaces it.
func (r *Reconciler) renewOrReissue(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time) (ctrl.Result, string, error) {
	st := &vs.Status
	l := st.Lease
	renewedAt := l.IssuedAt.Time
	if st.LastSyncTime != nil && st.LastSyncTime.After(renewedAt) {
		renewedAt = st.LastSyncTime.Time
	}
	ttl := wantedTTL(vs)
	jitter := jitterFor(string(vs.UID))
	action, at := DecideLease(now, LeaseFacts{IssuedAt: l.IssuedAt.Time, RenewedAt: renewedAt, ExpiresAt: l.ExpiresAt.Time, Renewable: l.Renewable, Wanted: ttl}, jitter)
	if action == LeaseWait {
		// Status times are kept to the second, so a wake-up can come a
		// moment early: wait for the real due time.
		st.RefreshAt = ptrTime(at)
		return r.requeue(vs, now), "unchanged", r.writeStatus(ctx, vs)
	}
	if action == LeaseRenew {
		c, err := r.tenantClient(ctx, vs)
		if err != nil {
			return r.failed(ctx, vs, now, authFailureReason(err), err)
		}
		asked := l.ExpiresAt.Sub(renewedAt)
		granted, err := renewLease(ctx, c, l.ID, asked)
		r.countVault(err)
		if err == nil && !RenewalCutShort(asked, granted) {
			if r.Metrics != nil {
				r.Metrics.leases.WithLabelValues("renewed").Inc()
			}
			expires := now.Add(granted)
			l.ExpiresAt = metav1.NewTime(expires)
			st.LastSyncTime = ptrTime(now)
			_, refresh := DecideLease(now, LeaseFacts{IssuedAt: l.IssuedAt.Time, RenewedAt: now, ExpiresAt: expires, Renewable: true, Wanted: ttl}, jitter)
			st.RefreshAt, st.ExpiresAt = ptrTime(refresh), ptrTime(expires)
			if err := r.annotateExpiry(ctx, vs, expires); err != nil {
				return ctrl.Result{}, "error", err
			}
			r.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("lease renewed until %s", expires.UTC().Format(time.RFC3339)))
			return r.requeue(vs, now), "renewed", r.writeStatus(ctx, vs)
		}
		if err != nil && vault.Classify(err) == vault.KindUnavailable {
			return r.failedVault(ctx, vs, now, err)
		}
		// Cut short by max TTL, or no longer renewable: new credentials.
		why := "max TTL reached"
		if err != nil {
			why = "renewal refused: " + vault.Describe(err)
		}
		r.Log.Info("issuing new credentials", "vaultsecret", client.ObjectKeyFromObject(vs), "reason", why, "asked", asked, "granted", granted)
	} else {
		r.Log.Info("issuing new credentials", "vaultsecret", client.ObjectKeyFromObject(vs), "reason", "lease not renewable, or the wanted lifetime (spec.ttl) reached")
	}
	var existing corev1.Secret
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: targetName(vs)}, &existing)
	if r.Metrics != nil {
		r.Metrics.leases.WithLabelValues("reissued").Inc()
	}
	return r.fetchAndWrite(ctx, vs, now, err == nil, &existing)
}

func (r *Reconciler) writeSecret(ctx context.Context, vs *v1alpha1.VaultSecret, data map[string][]byte, expiresAt time.Time, exists bool, existing *corev1.Secret) error {
	want := buildSecret(vs, data, expiresAt)
	if !exists {
		if err := r.Client.Create(ctx, want); err != nil {
			return fmt.Errorf("create Secret %s/%s: %w", want.Namespace, want.Name, err)
		}
		return nil
	}
	existing.Labels, existing.Annotations, existing.Type, existing.Data = want.Labels, want.Annotations, want.Type, want.Data
	existing.StringData = nil
	existing.OwnerReferences = want.OwnerReferences
	if err := r.Client.Update(ctx, existing); err != nil {
		return fmt.Errorf("update Secret %s/%s: %w", want.Namespace, want.Name, err)
	}
	return nil
}

func (r *Reconciler) annotateExpiry(ctx context.Context, vs *v1alpha1.VaultSecret, expires time.Time) error {
	var s corev1.Secret
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: targetName(vs)}, &s); err != nil {
		return err
	}
	patch := client.MergeFrom(s.DeepCopy())
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[ExpiresAtAnnotation] = expires.UTC().Format(time.RFC3339)
	return r.Client.Patch(ctx, &s, patch)
}

// failedVault reports a Vault failure with the reason it maps to.
func (r *Reconciler) failedVault(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time, err error) (ctrl.Result, string, error) {
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
	return r.failed(ctx, vs, now, reason, err)
}

// failed records a failed refresh; a Secret past its expiry is deleted.
func (r *Reconciler) failed(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time, reason string, err error) (ctrl.Result, string, error) {
	msg := vault.Describe(err)
	if vs.Status.ExpiresAt != nil && Expired(now, vs.Status.ExpiresAt.Time) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: vs.Namespace, Name: targetName(vs)}}
		if derr := r.Client.Delete(ctx, s); derr == nil {
			r.event(vs, corev1.EventTypeWarning, ReasonExpired, "Delete", "Secret %q deleted: it expired at %s without a successful refresh (%s)", targetName(vs), vs.Status.ExpiresAt.UTC().Format(time.RFC3339), reason)
		} else if !apierrors.IsNotFound(derr) {
			return ctrl.Result{}, "error", derr
		}
		reason, msg = ReasonExpired, fmt.Sprintf("Secret deleted at expiry; refresh keeps failing: %s", msg)
	} else {
		r.event(vs, corev1.EventTypeWarning, reason, "Sync", "%s", msg)
	}
	var failingSince time.Time
	if c := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); c != nil && c.Status == metav1.ConditionFalse {
		failingSince = c.LastTransitionTime.Time
	}
	r.setReady(vs, metav1.ConditionFalse, reason, msg)
	var expiresAt time.Time
	if vs.Status.ExpiresAt != nil {
		expiresAt = vs.Status.ExpiresAt.Time
	}
	return ctrl.Result{RequeueAfter: RetryAfter(now, failingSince, expiresAt)}, "failed", r.writeStatus(ctx, vs)
}

func (r *Reconciler) requeue(vs *v1alpha1.VaultSecret, now time.Time) ctrl.Result {
	var prev time.Time
	if l := vs.Status.Lease; l != nil && l.RevokePreviousAt != nil {
		prev = l.RevokePreviousAt.Time
	}
	var refresh, expires time.Time
	if vs.Status.RefreshAt != nil {
		refresh = vs.Status.RefreshAt.Time
	}
	if vs.Status.ExpiresAt != nil {
		expires = vs.Status.ExpiresAt.Time
	}
	wake := NextWake(refresh, expires, prev)
	if wake.IsZero() {
		return ctrl.Result{RequeueAfter: time.Minute}
	}
	return ctrl.Result{RequeueAfter: max(100*time.Millisecond, wake.Sub(now))}
}

func (r *Reconciler) setReady(vs *v1alpha1.VaultSecret, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{
		Type: "Ready", Status: status, Reason: reason, Message: msg, ObservedGeneration: vs.Generation,
		LastTransitionTime: metav1.NewTime(r.Clock.Now()),
	})
	vs.Status.ObservedGeneration = vs.Generation
}

// writeStatus writes vs's status. The controller is the status's only
// writer, so on a conflict (a stale cached copy) it reapplies the same
// status to the latest object: losing it would forget a lease.
func (r *Reconciler) writeStatus(ctx context.Context, vs *v1alpha1.VaultSecret) error {
	st := vs.Status.DeepCopy()
	for attempt := 0; ; attempt++ {
		err := r.Client.Status().Update(ctx, vs)
		if err == nil || !apierrors.IsConflict(err) || attempt >= 5 {
			if err != nil {
				return fmt.Errorf("update status of VaultSecret %s/%s: %w", vs.Namespace, vs.Name, err)
			}
			return nil
		}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), vs); err != nil {
			return client.IgnoreNotFound(err)
		}
		vs.Status = *st
	}
}

func (r *Reconciler) event(vs *v1alpha1.VaultSecret, typ, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(vs, nil, typ, reason, action, format, args...)
	}
}

// finalize revokes leases and lets the VaultSecret go.
func (r *Reconciler) finalize(ctx context.Context, vs *v1alpha1.VaultSecret) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vs, Finalizer) {
		return ctrl.Result{}, nil
	}
	if l := vs.Status.Lease; l != nil {
		for _, id := range []string{l.ID, l.PreviousID} {
			if id == "" {
				continue
			}
			if err := r.revoke(ctx, vs, id); err != nil {
				r.setReady(vs, metav1.ConditionFalse, ReasonVaultUnavailable, "cannot revoke the lease before deletion: "+vault.Describe(err))
				_ = r.writeStatus(ctx, vs)
				return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
			}
		}
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: vs.Namespace, Name: targetName(vs)}}
	if err := r.Client.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	controllerutil.RemoveFinalizer(vs, Finalizer)
	return ctrl.Result{}, r.Client.Update(ctx, vs)
}

func (r *Reconciler) revoke(ctx context.Context, vs *v1alpha1.VaultSecret, id string) error {
	c, err := r.tenantClient(ctx, vs)
	if err != nil {
		return err
	}
	err = revokeLease(ctx, c, id)
	r.countVault(err)
	if err == nil && r.Metrics != nil {
		r.Metrics.leases.WithLabelValues("revoked").Inc()
	}
	return err
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

func (r *Reconciler) tenantClient(ctx context.Context, vs *v1alpha1.VaultSecret) (*api.Client, error) {
	if k := vs.Spec.Auth.Kubernetes; k != nil {
		return r.Tenants.Client(ctx, tenantKeyFor(vs), k.Audiences)
	}
	return r.appRoleClient(ctx, vs)
}

// appRoleClient logs in with the role and secret IDs in the tenant's own
// Secret; its tokens are cached per (namespace, Secret, mount) like service
// account tokens.
func (r *Reconciler) appRoleClient(ctx context.Context, vs *v1alpha1.VaultSecret) (*api.Client, error) {
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
			return nil, fmt.Errorf("vault approle login with Secret %s/%s: %w", vs.Namespace, a.SecretRef, vault.Wrap("log in", err))
		}
		if sec == nil || sec.Auth == nil {
			return nil, fmt.Errorf("vault approle login with Secret %s/%s: vault returned no token", vs.Namespace, a.SecretRef)
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

func ptrTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t)
	return &mt
}
