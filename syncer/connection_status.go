package syncer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// connectionRecheck is how often a connection's CA Secret is read again
// when nothing else happens: the Secret is read by name, around the
// cache (which holds no Secret of others), so its changes are not
// watched. A new CA reaches the clients within this, plus the few
// seconds of internal/vault's file check; a login reads it at once.
const connectionRecheck = 30 * time.Second

// connectionStatus keeps each ClusterVaultConnection's status (Ready: the
// address parsed and the CA loaded) and its client in the pool. It never
// sends a request to the connection's address: whether Vault answers is
// each VaultAuth's Ready.
type connectionStatus struct {
	Client client.Client
	Pool   *connectionPool
	Clock  clock.PassiveClock
	Log    logr.Logger
}

func (c *connectionStatus) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cvc v1alpha1.ClusterVaultConnection
	if err := c.Client.Get(ctx, req.NamespacedName, &cvc); err != nil {
		if apierrors.IsNotFound(err) {
			c.Pool.forget(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig := cvc.Status.DeepCopy()
	cvc.Status.ObservedGeneration = cvc.Generation
	res := ctrl.Result{RequeueAfter: connectionRecheck}
	var fe *fieldError
	if err := checkConnectionSpec(cvc.Name, &cvc.Spec); errors.As(err, &fe) {
		// Only an edit fixes the spec itself: no recheck.
		c.setReady(&cvc, metav1.ConditionFalse, fe.reason, fe.msg)
		res = ctrl.Result{}
	} else if _, err := c.Pool.client(ctx, &connection{Name: cvc.Name, Key: connectionKey(cvc.Name, &cvc.Spec), Spec: &cvc.Spec}); errors.As(err, &fe) {
		c.setReady(&cvc, metav1.ConditionFalse, fe.reason, fe.msg)
	} else if err != nil {
		// The API server could not answer, or the client could not be
		// built: tried again with back-off.
		return ctrl.Result{}, err
	} else {
		c.setReady(&cvc, metav1.ConditionTrue, ReasonConnectionValid, readyMessage(&cvc.Spec))
	}
	if !equality.Semantic.DeepEqual(orig, &cvc.Status) {
		if err := c.Client.Status().Update(ctx, &cvc); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	return res, nil
}

func readyMessage(spec *v1alpha1.ClusterVaultConnectionSpec) string {
	if spec.CACert == nil {
		return "address parsed; Vault's certificate is checked against the system's roots"
	}
	ref := spec.CACert.SecretRef
	return fmt.Sprintf("address parsed; CA loaded from key %q of Secret %s/%s", orDefault(ref.Key, "ca.crt"), ref.Namespace, ref.Name)
}

func (c *connectionStatus) setReady(cvc *v1alpha1.ClusterVaultConnection, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&cvc.Status.Conditions, metav1.Condition{Type: "Ready", Status: status, Reason: reason, Message: msg,
		ObservedGeneration: cvc.Generation, LastTransitionTime: metav1.NewTime(c.Clock.Now())})
}

// setupConnections runs the connection status controller, and removes
// the private directory of the connections' CA files when the manager
// stops.
func (r *Reconciler) setupConnections(mgr ctrl.Manager) error {
	err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.VaultAuth{}, connectionRefIndex, func(o client.Object) []string {
		if n := connectionName(o.(*v1alpha1.VaultAuth)); n != DefaultConnection {
			return []string{n}
		}
		return nil
	})
	if err != nil {
		return err
	}
	pool := r.auths.pool
	if err := mgr.Add(runnableFunc(func(ctx context.Context) error { <-ctx.Done(); pool.close(); return nil })); err != nil {
		return err
	}
	st := &connectionStatus{Client: r.Client, Pool: pool, Clock: r.Clock, Log: r.Log.WithName("connection")}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ClusterVaultConnection{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("clustervaultconnection").
		Complete(st)
}

// runnableFunc is a manager.Runnable of a function.
type runnableFunc func(context.Context) error

func (f runnableFunc) Start(ctx context.Context) error { return f(ctx) }

// vaultAuthsOf lists the VaultAuths naming a connection.
func (r *Reconciler) vaultAuthsOf(ctx context.Context, name string) []v1alpha1.VaultAuth {
	var list v1alpha1.VaultAuthList
	if err := r.Client.List(ctx, &list, client.MatchingFields{connectionRefIndex: name}); err != nil {
		r.Log.Error(err, "listing the VaultAuths of a ClusterVaultConnection", "connection", name)
		return nil
	}
	return list.Items
}

// vaultAuthsWithConnection lists a namespace's VaultAuths that name a
// connection: those whose use of it a change of the namespace's labels
// may allow or refuse.
func (r *Reconciler) vaultAuthsWithConnection(ctx context.Context, ns string) []v1alpha1.VaultAuth {
	var list v1alpha1.VaultAuthList
	if err := r.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		r.Log.Error(err, "listing the VaultAuths of a namespace", "namespace", ns)
		return nil
	}
	out := list.Items[:0]
	for _, va := range list.Items {
		if connectionName(&va) != DefaultConnection {
			out = append(out, va)
		}
	}
	return out
}

// connectionChanged passes a connection's creation, deletion, spec edit,
// and a change of its Ready condition (a CA Secret fixed or broken),
// which decides whether its VaultAuths may use it; not its other status
// writes.
var connectionChanged = predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*v1alpha1.ClusterVaultConnection)
		n, ok2 := e.ObjectNew.(*v1alpha1.ClusterVaultConnection)
		if !ok1 || !ok2 {
			return false
		}
		a, b := meta.FindStatusCondition(o.Status.Conditions, "Ready"), meta.FindStatusCondition(n.Status.Conditions, "Ready")
		if a == nil || b == nil {
			return a != b
		}
		return a.Status != b.Status || a.Reason != b.Reason || a.ObservedGeneration != b.ObservedGeneration
	},
})

// labelsChanged passes namespace events that can change what a
// connection's allowedNamespaces selects.
var labelsChanged = predicate.Funcs{
	CreateFunc:  func(e event.CreateEvent) bool { return true },
	DeleteFunc:  func(e event.DeleteEvent) bool { return false },
	GenericFunc: func(e event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return !equality.Semantic.DeepEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
	},
}
