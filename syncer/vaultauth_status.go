package syncer

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// vaultAuthRetry is how soon a VaultAuth whose login failed is tried
// again when no VaultSecret's pass does it first.
const vaultAuthRetry = 30 * time.Second

// vaultAuthStatus keeps each VaultAuth's status: Ready is the outcome of
// its last login (made here or for one of its VaultSecrets, through the
// same cached token), and vaultSecrets counts the VaultSecrets naming it.
// It also keeps the token renewed while no VaultSecret uses it.
type vaultAuthStatus struct {
	Client            client.Client
	Auths             *sharedAuths
	Clock             clock.PassiveClock
	NamespaceSelector labels.Selector
	Log               logr.Logger
}

func (a *vaultAuthStatus) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var va v1alpha1.VaultAuth
	if err := a.Client.Get(ctx, req.NamespacedName, &va); err != nil {
		if apierrors.IsNotFound(err) {
			a.Auths.prune(req.Namespace, req.Name, tenantKey{})
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if a.NamespaceSelector != nil {
		// As for VaultSecrets: a namespace not selected may be another
		// controller's, so nothing is logged in or written.
		var ns corev1.Namespace
		if err := a.Client.Get(ctx, types.NamespacedName{Name: va.Namespace}, &ns); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		if !a.NamespaceSelector.Matches(labels.Set(ns.Labels)) {
			return ctrl.Result{}, nil
		}
	}
	// A VaultAuth that may not use its connection keeps no token at all.
	conn, connErr := a.Auths.conns.resolve(ctx, &va)
	if connErr != nil && connectionReason(connErr) == "" {
		return ctrl.Result{}, connErr
	}
	keep := tenantKey{}
	if connErr == nil {
		keep = vaultAuthKeyAt(&va, conn)
	}
	a.Auths.prune(va.Namespace, va.Name, keep)
	// Only counted: the cache's own objects are read, not copies of a
	// thousand VaultSecrets per count.
	var users v1alpha1.VaultSecretList
	if err := a.Client.List(ctx, &users, client.InNamespace(va.Namespace), client.MatchingFields{authRefIndex: va.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	orig := va.Status.DeepCopy()
	va.Status.ObservedGeneration = va.Generation
	va.Status.VaultSecrets = int32(len(users.Items))

	var res ctrl.Result
	if err := a.Auths.check(&va); err != nil {
		// Only an edit of the VaultAuth (or of the controller's flags)
		// changes this: no retry.
		a.setReady(&va, metav1.ConditionFalse, ReasonInvalid, err.Error())
	} else if connErr != nil {
		// Nothing is sent to any Vault; an edit of the connection, of
		// the VaultAuth or of the namespace's labels looks again.
		a.setReady(&va, metav1.ConditionFalse, connectionReason(connErr), connErr.Error())
	} else if tok, err := a.Auths.client(ctx, &va); err != nil {
		reason := authFailureReason(err)
		if r := connectionReason(err); r != "" {
			reason = r
		}
		a.setReady(&va, metav1.ConditionFalse, reason, explain(err))
		a.Log.V(1).Info("login failed; retrying", "vaultauth", req.NamespacedName.String(), "error", explain(err), "after", vaultAuthRetry)
		res.RequeueAfter = vaultAuthRetry
	} else {
		a.setReady(&va, metav1.ConditionTrue, ReasonLoggedIn, "Vault accepted the login; one token serves every VaultSecret naming this VaultAuth")
		res = renewAt(a.Clock.Now(), tok)
	}
	if !equality.Semantic.DeepEqual(orig, &va.Status) {
		if err := a.Client.Status().Update(ctx, &va); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	return res, nil
}

// renewAt is when to look again so that the token is renewed (Tenants
// renews one past two thirds of its life) even when no VaultSecret uses
// it: a token that does not expire needs no look.
func renewAt(now time.Time, tok *TenantToken) ctrl.Result {
	if tok.Expires.IsZero() {
		return ctrl.Result{}
	}
	due := tok.Expires.Add(-tok.ttl / 3).Add(time.Second)
	return ctrl.Result{RequeueAfter: max(time.Second, due.Sub(now))}
}

func (a *vaultAuthStatus) setReady(va *v1alpha1.VaultAuth, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&va.Status.Conditions, metav1.Condition{Type: "Ready", Status: status, Reason: reason, Message: msg,
		ObservedGeneration: va.Generation, LastTransitionTime: metav1.NewTime(a.Clock.Now())})
}

// withVaultAuths wires VaultAuths in: VaultSecrets indexed by the
// VaultAuth they name; the VaultSecrets of a created, edited or deleted
// VaultAuth looked at again (the edit changes their source hash, so they
// re-sync; the deletion makes them AuthNotFound); and the VaultAuth status
// controller.
func (r *Reconciler) withVaultAuths(mgr ctrl.Manager, b *builder.Builder) (*builder.Builder, error) {
	err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.VaultSecret{}, authRefIndex, func(o client.Object) []string {
		if n := authRefName(o.(*v1alpha1.VaultSecret)); n != "" {
			return []string{n}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Status writes do not move the generation: only spec edits, creations
	// and deletions re-sync the users.
	b = b.Watches(&v1alpha1.VaultAuth{}, handler.EnqueueRequestsFromMapFunc(r.usersOf),
		builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	if err := r.setupConnections(mgr); err != nil {
		return nil, err
	}
	// A connection created, edited or deleted, or a namespace whose labels
	// changed, can allow or refuse a VaultAuth its connection: its
	// VaultSecrets and itself are looked at again.
	b = b.Watches(&v1alpha1.ClusterVaultConnection{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		return r.usersOfAll(ctx, r.vaultAuthsOf(ctx, o.GetName()))
	}), builder.WithPredicates(connectionChanged)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.usersOfAll(ctx, r.vaultAuthsWithConnection(ctx, o.GetName()))
		}), builder.WithPredicates(labelsChanged))
	st := &vaultAuthStatus{Client: r.Client, Auths: r.auths, Clock: r.Clock, NamespaceSelector: r.NamespaceSelector,
		Log: r.Log.WithName("vaultauth")}
	err = ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.VaultAuth{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.VaultSecret{}, authRefChanges()).
		Watches(&v1alpha1.ClusterVaultConnection{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return requestsFor(r.vaultAuthsOf(ctx, o.GetName()))
		}), builder.WithPredicates(connectionChanged)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return requestsFor(r.vaultAuthsWithConnection(ctx, o.GetName()))
		}), builder.WithPredicates(labelsChanged)).
		WatchesRawSource(source.Channel(r.auths.logins, &handler.EnqueueRequestForObject{})).
		Named("vaultauth").
		Complete(st)
	return b, err
}

// requestsFor is the requests of VaultAuths.
func requestsFor(vas []v1alpha1.VaultAuth) []reconcile.Request {
	out := make([]reconcile.Request, 0, len(vas))
	for i := range vas {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vas[i])})
	}
	return out
}

// usersOfAll lists the VaultSecrets naming any of the VaultAuths.
func (r *Reconciler) usersOfAll(ctx context.Context, vas []v1alpha1.VaultAuth) []reconcile.Request {
	var out []reconcile.Request
	for i := range vas {
		out = append(out, r.usersOf(ctx, &vas[i])...)
	}
	return out
}

// usersOf lists the VaultSecrets naming a VaultAuth.
func (r *Reconciler) usersOf(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.VaultSecretList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{authRefIndex: o.GetName()}); err != nil {
		r.Log.Error(err, "listing the VaultSecrets of a VaultAuth", "vaultauth", client.ObjectKeyFromObject(o))
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return out
}

// countSettle is how long the VaultAuth status controller lets its
// count of users settle: a thousand VaultSecrets created at once naming
// one VaultAuth cost a status write or two, not one per pass that found
// the count moved.
const countSettle = time.Second

// authRefChanges enqueues, countSettle later, the VaultAuths whose count
// of users a VaultSecret event changes: its creation, its deletion, or an
// edit of spec.authRef (both the old and the new VaultAuth). The delaying
// queue holds a key once, so every change within the wait is one pass.
// Status writes, which are most VaultSecret events, enqueue nothing.
func authRefChanges() handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object) {
		if vs, ok := o.(*v1alpha1.VaultSecret); ok && vs.Spec.AuthRef != nil {
			q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vs.Namespace, Name: vs.Spec.AuthRef.Name}}, countSettle)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			oldVS, ok1 := e.ObjectOld.(*v1alpha1.VaultSecret)
			newVS, ok2 := e.ObjectNew.(*v1alpha1.VaultSecret)
			if ok1 && ok2 && authRefName(oldVS) != authRefName(newVS) {
				add(q, oldVS)
				add(q, newVS)
			}
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
	}
}
