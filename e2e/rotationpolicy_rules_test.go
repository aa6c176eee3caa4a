package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// TestRotationPolicyGateTimes: the CRD refuses an API server gate timeout
// shorter than settleTime + 2m (the gate passes no sooner than the settle
// time after every API server's first report of the new key_id, which
// kube-apiserver's once-a-minute Status poll can delay up to 2m), naming
// the field, and accepts exactly settleTime + 2m. It used to accept any
// timeout longer than the settle time.
func TestRotationPolicyGateTimes(t *testing.T) {
	t.Parallel()
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kc, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	policy := func(name string, settle, timeout time.Duration) *v1alpha1.RotationPolicy {
		return &v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.RotationPolicySpec{Transit: v1alpha1.TransitKeyRef{Mount: "transit", Key: "kms"}, RotateEvery: metav1.Duration{Duration: 720 * time.Hour},
				APIServers: v1alpha1.APIServerGate{SettleTime: &metav1.Duration{Duration: settle}, Timeout: &metav1.Duration{Duration: timeout}}}}
	}
	ctx := context.Background()
	for _, timeout := range []time.Duration{5*time.Minute + time.Second, 7*time.Minute - time.Second} {
		err := kc.Create(ctx, policy("short", 5*time.Minute, timeout))
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "apiServers.timeout must be at least apiServers.settleTime + 2m") {
			t.Fatalf("create with settleTime 5m, timeout %s: %v, want Invalid naming apiServers.timeout and settleTime + 2m", timeout, err)
		}
	}
	if err := kc.Create(ctx, policy("tight", 5*time.Minute, 7*time.Minute)); err != nil {
		t.Fatalf("create with settleTime 5m, timeout 7m: %v", err)
	}
}
