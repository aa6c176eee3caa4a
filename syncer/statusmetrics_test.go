package syncer

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func TestStatusCollectorNotReadyAndEarliestExpiry(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	vs := func(ns, name string, ready metav1.ConditionStatus, reason string, expiresIn time.Duration) client.Object {
		v := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if ready != "" {
			v.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: ready, Reason: reason, LastTransitionTime: metav1.NewTime(now)}}
		}
		if expiresIn != 0 {
			at := metav1.NewTime(now.Add(expiresIn))
			v.Status.ExpiresAt = &at
		}
		return v
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		vs("team-a", "db", metav1.ConditionTrue, ReasonSynced, time.Hour),
		vs("team-a", "api", metav1.ConditionTrue, ReasonSynced, 20*time.Minute),
		vs("team-a", "cache", metav1.ConditionFalse, ReasonPermissionDenied, 5*time.Minute),
		vs("team-a", "queue", metav1.ConditionFalse, ReasonPermissionDenied, 0),
		vs("team-b", "new", "", "", 0),
		vs("team-b", "old", metav1.ConditionFalse, ReasonVaultUnavailable, -time.Minute),
	).Build()
	col := &StatusCollector{Reader: c, Clock: clocktesting.NewFakePassiveClock(now), Log: logr.Discard()}
	want := `
# HELP vaultkms_controller_secret_expiry_earliest_seconds Seconds until the earliest status.expiresAt among a namespace's VaultSecrets, apart for Ready (ready="true") and not Ready ones; negative once passed.
# TYPE vaultkms_controller_secret_expiry_earliest_seconds gauge
vaultkms_controller_secret_expiry_earliest_seconds{namespace="team-a",ready="false"} 300
vaultkms_controller_secret_expiry_earliest_seconds{namespace="team-a",ready="true"} 1200
vaultkms_controller_secret_expiry_earliest_seconds{namespace="team-b",ready="false"} -60
# HELP vaultkms_controller_vaultsecrets_not_ready VaultSecrets whose Ready condition is not True, by namespace and the condition's reason (Pending before the first pass).
# TYPE vaultkms_controller_vaultsecrets_not_ready gauge
vaultkms_controller_vaultsecrets_not_ready{namespace="team-a",reason="PermissionDenied"} 2
vaultkms_controller_vaultsecrets_not_ready{namespace="team-b",reason="Pending"} 1
vaultkms_controller_vaultsecrets_not_ready{namespace="team-b",reason="VaultUnavailable"} 1
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// It registers beside the counters without a clash.
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	reg.MustRegister(col)
}
