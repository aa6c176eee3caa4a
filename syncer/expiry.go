package syncer

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
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
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// Expirer deletes managed Secrets at their expires-at. It is a controller
// of its own, on Secrets, that never calls Vault: however slow or
// unreachable Vault is, and however busy the VaultSecret workers are, a
// Secret does not outlive the time it promises.
type Expirer struct {
	Client   client.Client
	Clock    clock.PassiveClock
	Recorder events.EventRecorder
	Log      logr.Logger
	// Metrics, when set, counts the Secrets deleted at their expiry.
	Metrics *Metrics
	// Workers is the number of concurrent expiry checks.
	Workers int
	// NamespaceSelector, when set, is the controller's
	// --namespace-selector: Secrets are deleted at expiry in every
	// namespace, but a VaultSecret's status is written only where the
	// controller serves (another controller may serve the others).
	NamespaceSelector labels.Selector
}

// SetupWithManager watches the managed Secrets (the cache holds only
// those), and the VaultSecrets whose expiryPolicy changes: a Secret kept
// past its expiry under Retain is looked at again when its VaultSecret
// switches to Delete, not at the cache's next resync hours later.
func (e *Expirer) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Secret{}).
		Watches(&v1alpha1.VaultSecret{}, handler.EnqueueRequestsFromMapFunc(targetSecretOf),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc:  func(event.CreateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
				UpdateFunc:  expiryPolicyChanged,
			})).
		Named("vaultsecret-expiry").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, e.Workers)}).
		Complete(e)
}

// targetSecretOf names the Secret a VaultSecret writes.
func targetSecretOf(_ context.Context, o client.Object) []ctrl.Request {
	vs, ok := o.(*v1alpha1.VaultSecret)
	if !ok {
		return nil
	}
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: vs.Namespace, Name: targetName(vs)}}}
}

// expiryPolicyChanged passes the VaultSecret updates that change what
// happens to a Secret at its expiry.
func expiryPolicyChanged(e event.UpdateEvent) bool {
	old, ok1 := e.ObjectOld.(*v1alpha1.VaultSecret)
	cur, ok2 := e.ObjectNew.(*v1alpha1.VaultSecret)
	return ok1 && ok2 && retained(old) != retained(cur)
}

// ExpiryDue returns when a Secret with these annotations expires, and
// whether it carries an expiry at all.
func ExpiryDue(annotations map[string]string) (time.Time, bool) {
	v, ok := annotations[ExpiresAtAnnotation]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		// A hand-edited, unparsable expiry: treat as expired rather than
		// keep credentials for ever.
		return time.Time{}, true
	}
	return t, true
}

// KeepPastExpiry tells whether a Secret whose expires-at has passed stays:
// a kv Secret whose VaultSecret says expiryPolicy Retain (for good: zero
// time), or one whose VaultSecret's status records a later expiry for the
// leases the Secret holds (every current lease status names) — a renewal
// whose annotation write was lost — until that expiry.
func KeepPastExpiry(vs *v1alpha1.VaultSecret, s *corev1.Secret, now time.Time) (bool, time.Time) {
	if retained(vs) {
		return true, time.Time{}
	}
	st := vs.Status
	if st.SecretName != s.Name || st.ExpiresAt == nil || !now.Before(st.ExpiresAt.Time) {
		return false, time.Time{}
	}
	if held := currentLeases(vs); len(held) == 0 || !holdsAll(s.Annotations[LeaseAnnotation], held) {
		return false, time.Time{}
	}
	return true, st.ExpiresAt.Time
}

// Reconcile implements reconcile.Reconciler.
func (e *Expirer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var s corev1.Secret
	if err := e.Client.Get(ctx, req.NamespacedName, &s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	owner := metav1.GetControllerOf(&s)
	if owner == nil || owner.Kind != "VaultSecret" || owner.APIVersion != v1alpha1.GroupVersion.String() || !s.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	at, ok := ExpiryDue(s.Annotations)
	if !ok {
		return ctrl.Result{}, nil
	}
	now := e.Clock.Now()
	if now.Before(at) {
		return ctrl.Result{RequeueAfter: at.Sub(now)}, nil
	}
	var vs v1alpha1.VaultSecret
	found := false
	if err := e.Client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: owner.Name}, &vs); err == nil && vs.UID == owner.UID {
		found = true
		if keep, until := KeepPastExpiry(&vs, &s, now); keep {
			// Retained, or renewed in status while the annotation lags
			// (the reconciler rewrites it): not deleted.
			if until.IsZero() {
				return ctrl.Result{}, nil
			}
			return ctrl.Result{RequeueAfter: until.Sub(now)}, nil
		}
	}
	// Delete exactly the object read: same UID (not a Secret of the same
	// name created since) and same version (not one just refreshed).
	uid, rv := s.UID, s.ResourceVersion
	err := e.Client.Delete(ctx, &s, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err):
		return ctrl.Result{}, nil
	case apierrors.IsConflict(err):
		// Refreshed meanwhile: look again at the new version.
		return ctrl.Result{Requeue: true}, nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("delete expired Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	e.Log.Info("deleted expired Secret", "secret", req.NamespacedName, "expiredAt", at)
	// Counted here, where the deletion happens and only once (the delete
	// is conditional on this very version): the VaultSecret's Ready turns
	// Expired through two writers, this one and its own pass, so a count
	// tied to that transition missed the expiries whose mark won the race.
	if e.Metrics != nil {
		e.Metrics.expired.WithLabelValues(v1alpha1.ExpiryDelete).Inc()
	}
	if found && e.serves(ctx, s.Namespace) {
		e.markExpired(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}, vs.UID, s.Name, at)
	}
	if e.Recorder != nil {
		vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: owner.Name, UID: owner.UID}}
		vs.APIVersion, vs.Kind = owner.APIVersion, owner.Kind
		e.Recorder.Eventf(vs, nil, corev1.EventTypeWarning, ReasonExpired, "Delete", "Secret %q deleted: it expired at %s without a successful refresh", s.Name, at.UTC().Format(time.RFC3339))
	}
	return ctrl.Result{}, nil
}

// serves tells whether the controller serves namespace ns.
func (e *Expirer) serves(ctx context.Context, ns string) bool {
	if e.NamespaceSelector == nil {
		return true
	}
	var n corev1.Namespace
	if err := e.Client.Get(ctx, types.NamespacedName{Name: ns}, &n); err != nil {
		return false
	}
	return e.NamespaceSelector.Matches(labels.Set(n.Labels))
}

// markExpired makes the VaultSecret's Ready say that its Secret is gone,
// at once: its own pass may wait behind a Vault that does not answer, and
// until then Ready=True would describe a Secret that no longer exists.
// The write is conditional on the version read, so it never overwrites a
// newer status (a refresh that wrote the Secret again); a stale cache is
// read again a few times, then left to the VaultSecret's own pass.
func (e *Expirer) markExpired(ctx context.Context, key types.NamespacedName, uid types.UID, secretName string, at time.Time) {
	for range 3 {
		var vs v1alpha1.VaultSecret
		if err := e.Client.Get(ctx, key, &vs); err != nil || vs.UID != uid {
			return
		}
		if vs.Status.SecretName != "" && vs.Status.SecretName != secretName {
			return // it writes another Secret now
		}
		next := vs.DeepCopy()
		meta.SetStatusCondition(&next.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: ReasonExpired,
			ObservedGeneration: vs.Generation, Message: fmt.Sprintf("Secret %q deleted at its expiry (%s) without a successful refresh; the next successful read writes it again", secretName, formatTime(at))})
		err := e.Client.Status().Patch(ctx, next, client.MergeFromWithOptions(&vs, client.MergeFromWithOptimisticLock{}))
		if err == nil || !apierrors.IsConflict(err) {
			if err != nil {
				e.Log.Info("could not mark the VaultSecret expired; its own pass will", "vaultsecret", key, "error", err.Error())
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
