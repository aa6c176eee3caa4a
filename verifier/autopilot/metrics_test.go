package autopilot

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// A policy stopped by a gate shows as stage Stopped with the gate's reason;
// a running one exports its times, versions and objects re-encrypted.
func TestRotationStatusCollector(t *testing.T) {
	last := metav1.NewTime(time.Unix(1_800_000_000, 0))
	next := metav1.NewTime(time.Unix(1_802_592_000, 0))
	stopped := &v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "stopped"}}
	stopped.Status.Stage = v1alpha1.StageStopped
	stopped.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonGateKeyMismatch, LastTransitionTime: last}}
	running := &v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "running"}}
	running.Status.Stage = v1alpha1.StageReencrypting
	running.Status.LastRotationTime, running.Status.NextRotationTime = &last, &next
	running.Status.Reencrypted, running.Status.CurrentVersion, running.Status.MinDecryptionVersion = 42, 7, 5
	running.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRotated, LastTransitionTime: last}}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := &StatusCollector{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(stopped, running).Build(), Log: logr.Discard()}
	want := `
# HELP vaultkms_auditor_rotation_key_version The latest version of the policy's Transit key, as the autopilot last read it.
# TYPE vaultkms_auditor_rotation_key_version gauge
vaultkms_auditor_rotation_key_version{policy="running"} 7
# HELP vaultkms_auditor_rotation_last_timestamp_seconds When the autopilot last rotated the policy's Transit key (Unix seconds).
# TYPE vaultkms_auditor_rotation_last_timestamp_seconds gauge
vaultkms_auditor_rotation_last_timestamp_seconds{policy="running"} 1.8e+09
# HELP vaultkms_auditor_rotation_min_decryption_version The min_decryption_version of the policy's Transit key: versions below it are trimmed.
# TYPE vaultkms_auditor_rotation_min_decryption_version gauge
vaultkms_auditor_rotation_min_decryption_version{policy="running"} 5
# HELP vaultkms_auditor_rotation_not_ready 1 while a RotationPolicy's Ready condition is not True, by its reason (a gate that refused, a failed step, Suspended).
# TYPE vaultkms_auditor_rotation_not_ready gauge
vaultkms_auditor_rotation_not_ready{policy="stopped",reason="KeyMismatch"} 1
# HELP vaultkms_auditor_rotation_objects_reencrypted Objects re-encrypted in the policy's current or last cycle.
# TYPE vaultkms_auditor_rotation_objects_reencrypted gauge
vaultkms_auditor_rotation_objects_reencrypted{policy="running"} 42
vaultkms_auditor_rotation_objects_reencrypted{policy="stopped"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"vaultkms_auditor_rotation_key_version", "vaultkms_auditor_rotation_last_timestamp_seconds", "vaultkms_auditor_rotation_min_decryption_version",
		"vaultkms_auditor_rotation_not_ready", "vaultkms_auditor_rotation_objects_reencrypted"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ones := map[string]string{}
	series := 0
	for _, f := range fams {
		if f.GetName() != "vaultkms_auditor_rotation_stage" {
			continue
		}
		for _, m := range f.GetMetric() {
			series++
			if m.GetGauge().GetValue() != 1 {
				continue
			}
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			ones[l["policy"]] += l["stage"]
		}
	}
	if series != 2*len(stages) {
		t.Errorf("stage series = %d, want %d (every stage of each policy)", series, 2*len(stages))
	}
	if ones["running"] != "Reencrypting" || ones["stopped"] != "Stopped" {
		t.Errorf("stages at 1: %v, want running=Reencrypting and stopped=Stopped", ones)
	}
}
