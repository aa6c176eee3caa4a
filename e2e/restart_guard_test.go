package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/syncer"
)

// TestChartRestartGuard: the chart's RBAC lets the controller patch every
// Deployment, StatefulSet and DaemonSet (rollout restarts); its admission
// policy must let that identity change the restart annotation and nothing
// else, against the real API server.
func TestChartRestartGuard(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e")
	}
	t.Parallel()
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	cp.Namespace("app")
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.ApplyChartRBAC("vaultkms-system"))
	if err != nil {
		t.Fatal(err)
	}
	asController, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app", Labels: map[string]string{"team": "a"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"team.example/owner": "a"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}},
			},
		},
	}
	if _, err := cp.Client.AppsV1().Deployments("app").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := func(body string) error {
		_, err := asController.AppsV1().Deployments("app").Patch(ctx, "web", types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}

	// The policy is enforced once the API server has loaded it; until
	// then an image change would pass, so probe with dry runs (a patch
	// that went through would make every later identical patch a no-op,
	// which the policy rightly lets pass) until the first refusal.
	eventually(t, 30*time.Second, func() error {
		body := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.example/evil:%d"}]}}}}`, time.Now().UnixNano())
		_, err = asController.AppsV1().Deployments("app").Patch(ctx, "web", types.MergePatchType, []byte(body), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil || !strings.Contains(err.Error(), "restartedAt") {
			return fmt.Errorf("the controller's identity may change a Deployment's image (got %v): the restart guard is not enforced", err)
		}
		return nil
	})
	if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
		t.Fatalf("image change refused with %v, want Invalid or Forbidden", err)
	}

	// What the restarter sends passes, twice (a second restart changes
	// the annotation it set the first time).
	for i := 0; i < 2; i++ {
		if err := patch(string(syncer.RestartPatch(time.Now().Add(time.Duration(i) * time.Minute)))); err != nil {
			t.Fatalf("restart patch %d refused: %v", i, err)
		}
	}

	for name, body := range map[string]string{
		"service account":       `{"spec":{"template":{"spec":{"serviceAccountName":"admin"}}}}`,
		"replicas":              `{"spec":{"replicas":0}}`,
		"update strategy":       `{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}`,
		"pod template label":    `{"spec":{"template":{"metadata":{"labels":{"role":"db"}}}}}`,
		"other annotation":      `{"spec":{"template":{"metadata":{"annotations":{"team.example/owner":"b"}}}}}`,
		"removed annotation":    `{"spec":{"template":{"metadata":{"annotations":{"team.example/owner":null}}}}}`,
		"workload label":        `{"metadata":{"labels":{"team":"b"}}}`,
		"workload annotation":   `{"metadata":{"annotations":{"note":"x"}}}`,
		"image":                 `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.example/evil:1"}]}}}}`,
		"restart plus an image": `{"spec":{"template":{"metadata":{"annotations":{"secrets.vaultkms.io/restartedAt":"x"}},"spec":{"containers":[{"name":"web","image":"registry.example/evil:1"}]}}}}`,
	} {
		if err := patch(body); err == nil || !strings.Contains(err.Error(), "restartedAt") {
			t.Errorf("%s: the controller's patch got %v, want a refusal naming the restart annotation", name, err)
		}
	}

	got, err := cp.Client.AppsV1().Deployments("app").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := got.Spec.Template.Spec.Containers[0].Image; img != "registry.example/web:1" {
		t.Errorf("image is %q after the refused patches", img)
	}
	if got.Spec.Template.Annotations[syncer.RestartedAtAnnotation] == "" {
		t.Errorf("the allowed restart patch left no %s annotation", syncer.RestartedAtAnnotation)
	}

	// The policy binds the controller only: an administrator's edit passes.
	if _, err := cp.Client.AppsV1().Deployments("app").Patch(ctx, "web", types.MergePatchType,
		[]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.example/web:2"}]}}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("an administrator's image change was refused: %v", err)
	}
}
