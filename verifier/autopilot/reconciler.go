package autopilot

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/go-logr/logr"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/transitkey"
)

// Reconciler runs the Machine for each RotationPolicy and persists every
// step before the next one acts.
type Reconciler struct {
	// Client writes the status; Reader reads policies uncached, so a step
	// never acts on a status older than the last one written.
	Client   client.Client
	Reader   client.Reader
	Machine  *Machine
	Recorder events.EventRecorder
	Log      logr.Logger
}

// SetupWithManager watches RotationPolicies: spec changes and annotation
// changes (the resume annotation) start a step; status writes do not.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("rotationpolicy").
		For(&v1alpha1.RotationPolicy{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// Reconcile takes one step of one policy.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var p v1alpha1.RotationPolicy
	if err := r.Reader.Get(ctx, req.NamespacedName, &p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var out Outcome
	if other, err := r.duplicateOf(ctx, &p); err != nil {
		return ctrl.Result{}, err
	} else if other != "" {
		out = r.Machine.Stop(&p, v1alpha1.ReasonGateDuplicate, fmt.Errorf("RotationPolicy %q already manages %s/%s", other, SettingsOf(p.Spec).Mount, p.Spec.Transit.Key))
	} else {
		out = r.Machine.Step(ctx, &p)
	}
	if !apiequality.Semantic.DeepEqual(out.Status, p.Status) {
		p.Status = out.Status
		if err := r.Client.Status().Update(ctx, &p); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: time.Second}, nil
			}
			return ctrl.Result{}, fmt.Errorf("update RotationPolicy %q status: %w", p.Name, err)
		}
	}
	for _, e := range out.Events {
		r.Log.Info("rotation policy event", "policy", p.Name, "type", e.Type, "reason", e.Reason, "note", e.Note)
		if r.Recorder != nil {
			r.Recorder.Eventf(&p, nil, e.Type, e.Reason, e.Action, "%s", e.Note)
		}
	}
	return ctrl.Result{RequeueAfter: out.Requeue}, nil
}

// duplicateOf names the older policy for the same key, if any: one key has
// one policy, the oldest (then the first by name).
func (r *Reconciler) duplicateOf(ctx context.Context, p *v1alpha1.RotationPolicy) (string, error) {
	var list v1alpha1.RotationPolicyList
	if err := r.Reader.List(ctx, &list); err != nil {
		return "", fmt.Errorf("list RotationPolicies: %w", err)
	}
	return FirstForKey(list.Items, p), nil
}

// FirstForKey returns the name of the policy that owns p's key when it is
// not p: the oldest, ties broken by name.
func FirstForKey(all []v1alpha1.RotationPolicy, p *v1alpha1.RotationPolicy) string {
	key := func(q *v1alpha1.RotationPolicy) transitkey.KeyID {
		s := SettingsOf(q.Spec)
		return transitkey.NewKeyID(s.Namespace, s.Mount, s.Key, 0, time.Time{})
	}
	var same []v1alpha1.RotationPolicy
	for i := range all {
		if key(&all[i]).SameKey(key(p)) {
			same = append(same, all[i])
		}
	}
	if len(same) == 0 {
		return ""
	}
	sort.Slice(same, func(i, j int) bool {
		a, b := same[i].CreationTimestamp.Time, same[j].CreationTimestamp.Time
		if !a.Equal(b) {
			return a.Before(b)
		}
		return same[i].Name < same[j].Name
	})
	if same[0].Name == p.Name {
		return ""
	}
	return same[0].Name
}
