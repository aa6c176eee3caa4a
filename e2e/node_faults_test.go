package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// testControllerFaults deletes the controller's leader pod (the other
// replica takes the Lease over) and then evicts both controller pods at
// once, as a node drain does: the chart's PodDisruptionBudget refuses the
// second eviction.
func testControllerFaults(t *testing.T, cp *harness.ControlPlane, ns string) {
	ctx := context.Background()
	pods := cp.Client.CoreV1().Pods(ns)
	controllerPods := func() []corev1.Pod {
		t.Helper()
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
		if err != nil {
			t.Fatal(err)
		}
		var ready []corev1.Pod
		for _, p := range l.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				ready = append(ready, p)
			}
		}
		return ready
	}
	// The Lease holder's identity starts with its pod's name (the
	// hostname) followed by "_".
	var leader string
	eventually(t, 60*time.Second, func() error {
		holder, _ := leaseHolder(t, cp, ns)
		for _, p := range controllerPods() {
			if strings.HasPrefix(holder, p.Name+"_") {
				leader = p.Name
				return nil
			}
		}
		return fmt.Errorf("Lease holder %q is none of the Ready controller pods", holder)
	})
	lease := func() *coordinationv1.Lease {
		t.Helper()
		l, err := cp.Client.CoordinationV1().Leases(ns).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// When the old leader's Lease would run out if nobody released it:
	// its last renewal seen here (a later one only moves this later) plus
	// its duration, both the API server's.
	held := lease()
	expiry := held.Spec.RenewTime.Add(time.Duration(*held.Spec.LeaseDurationSeconds) * time.Second)
	if err := pods.Delete(ctx, leader, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	eventually(t, 90*time.Second, func() error {
		holder, _ := leaseHolder(t, cp, ns)
		if holder == "" || strings.HasPrefix(holder, leader+"_") {
			return fmt.Errorf("the Lease is still %q", holder)
		}
		return nil
	})
	t.Logf("leader pod %s deleted: another replica holds the Lease after %s", leader, time.Since(deleted).Round(100*time.Millisecond))
	// A deleted pod stops gracefully and gives the Lease up: the other
	// replica must have taken it before it could have expired.
	if acquired := lease().Spec.AcquireTime; acquired == nil || !acquired.Time.Before(expiry) {
		t.Errorf("the new leader acquired the Lease at %v, not before the old one ran out (%v): a stopped leader did not release it", acquired, expiry)
	}

	// Both replicas Ready again (the Deployment replaced the deleted one)
	// and the disruption controller counted them.
	eventually(t, 90*time.Second, func() error {
		if n := len(controllerPods()); n != 2 {
			return fmt.Errorf("%d Ready controller pods, want 2", n)
		}
		pdbs, err := cp.Client.PolicyV1().PodDisruptionBudgets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(pdbs.Items) != 1 || pdbs.Items[0].Status.DisruptionsAllowed != 1 {
			return fmt.Errorf("PodDisruptionBudgets %v: want one allowing 1 disruption", pdbs.Items)
		}
		return nil
	})
	ready := controllerPods()
	evict := func(name string) error {
		return pods.EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})
	}
	if err := evict(ready[0].Name); err != nil {
		t.Fatalf("the first eviction (one of two replicas) was refused: %v", err)
	}
	err := evict(ready[1].Name)
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("evicting the last Ready replica: %v, want it refused by the PodDisruptionBudget (429)", err)
	}
	t.Logf("drain: the first controller pod was evicted, the second refused: %v", err)
}
