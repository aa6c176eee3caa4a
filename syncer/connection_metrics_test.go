package syncer

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// TestConnectionCollector: one series per connection, labelled by name
// and reason only; a condition of an older generation counts as Pending.
func TestConnectionCollector(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC))
	conn := func(name string, gen int64, status metav1.ConditionStatus, reason string, condGen int64) client.Object {
		c := cvc(name, "https://vault-"+name+".example:8200", nil)
		c.Generation = gen
		if status != "" {
			c.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: status, Reason: reason, ObservedGeneration: condGen, LastTransitionTime: now}}
		}
		return c
	}
	c := fake.NewClientBuilder().WithScheme(connScheme(t)).WithObjects(
		conn("eu", 1, metav1.ConditionTrue, ReasonConnectionValid, 1),
		conn("us", 2, metav1.ConditionFalse, ReasonCACertInvalid, 2),
		conn("new", 1, "", "", 0),
		conn("edited", 3, metav1.ConditionTrue, ReasonConnectionValid, 2),
	).Build()
	want := `
# HELP vaultkms_controller_connection_ready 1 when a ClusterVaultConnection is Ready (address parsed, CA loaded), else 0, with its Ready reason (Pending before the first look).
# TYPE vaultkms_controller_connection_ready gauge
vaultkms_controller_connection_ready{connection="edited",reason="Pending"} 0
vaultkms_controller_connection_ready{connection="eu",reason="Valid"} 1
vaultkms_controller_connection_ready{connection="new",reason="Pending"} 0
vaultkms_controller_connection_ready{connection="us",reason="CACertInvalid"} 0
`
	col := &ConnectionCollector{Reader: c, Log: logr.Discard()}
	if err := testutil.CollectAndCompare(col, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
