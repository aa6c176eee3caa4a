package syncer

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// RestartedAtAnnotation is stamped on the pod template of a rollout
// target, the way `kubectl rollout restart` does.
const RestartedAtAnnotation = "secrets.vaultkms.io/restartedAt"

// restarter restarts the rollout targets when the Secret's data changed;
// only new data does, never a metadata change. It returns how many targets
// it restarted and how many patches failed, for metrics.
type restarter struct {
	Client client.Client
	Status *statusRecorder
}

func (r *restarter) restart(ctx context.Context, vs *v1alpha1.VaultSecret, now time.Time) (restarted, failed int) {
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
		patch := []byte(fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, RestartedAtAnnotation, formatTime(now)))
		obj.SetNamespace(vs.Namespace)
		obj.SetName(t.Name)
		if err := r.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
			r.Status.event(vs, corev1.EventTypeWarning, "RestartFailed", "Restart", "%s %q: %v", t.Kind, t.Name, err)
			failed++
			continue
		}
		r.Status.event(vs, corev1.EventTypeNormal, "Restarted", "Restart", "%s %q restarted for new Secret data", t.Kind, t.Name)
		restarted++
	}
	return restarted, failed
}
