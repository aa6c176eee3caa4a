package autopilot

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// stages are every stage a RotationPolicy can be in; the stage gauge
// exports each (1 for the current one, 0 for the others), so a query for
// one stage finds a series whatever the policy is doing.
var stages = []v1alpha1.RotationStage{
	v1alpha1.StageIdle, v1alpha1.StageRotating, v1alpha1.StageWaitingForAPIServers, v1alpha1.StageReencrypting,
	v1alpha1.StageVerifying, v1alpha1.StageWaitingToTrim, v1alpha1.StageTrimming, v1alpha1.StageDone, v1alpha1.StageStopped,
}

var (
	stageDesc = prometheus.NewDesc("vaultkms_auditor_rotation_stage",
		"1 for the stage each RotationPolicy is in, 0 for the others.", []string{"policy", "stage"}, nil)
	notReadyDesc = prometheus.NewDesc("vaultkms_auditor_rotation_not_ready",
		"1 while a RotationPolicy's Ready condition is not True, by its reason (a gate that refused, a failed step, Suspended).", []string{"policy", "reason"}, nil)
	lastRotationDesc = prometheus.NewDesc("vaultkms_auditor_rotation_last_timestamp_seconds",
		"When the autopilot last rotated the policy's Transit key (Unix seconds).", []string{"policy"}, nil)
	nextRotationDesc = prometheus.NewDesc("vaultkms_auditor_rotation_next_timestamp_seconds",
		"When the next rotation of the policy's key is due (Unix seconds).", []string{"policy"}, nil)
	reencryptedDesc = prometheus.NewDesc("vaultkms_auditor_rotation_objects_reencrypted",
		"Objects re-encrypted in the policy's current or last cycle.", []string{"policy"}, nil)
	keyVersionDesc = prometheus.NewDesc("vaultkms_auditor_rotation_key_version",
		"The latest version of the policy's Transit key, as the autopilot last read it.", []string{"policy"}, nil)
	minDecryptionDesc = prometheus.NewDesc("vaultkms_auditor_rotation_min_decryption_version",
		"The min_decryption_version of the policy's Transit key: versions below it are trimmed.", []string{"policy"}, nil)
)

// StatusCollector exports, at every scrape, what the RotationPolicies'
// status says: stage, Ready reason, last and next rotation, objects
// re-encrypted, key versions. Status is where the autopilot records every
// step, so reading it (from the manager's cache) cannot disagree with
// kubectl. Labels are policy names (cluster-scoped objects an
// administrator names), stages and the autopilot's own reasons.
type StatusCollector struct {
	Reader client.Reader
	Log    logr.Logger
}

func (c *StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{stageDesc, notReadyDesc, lastRotationDesc, nextRotationDesc, reencryptedDesc, keyVersionDesc, minDecryptionDesc} {
		ch <- d
	}
}

func (c *StatusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.RotationPolicyList
	if err := c.Reader.List(ctx, &list); err != nil {
		c.Log.Info("cannot list RotationPolicies for metrics", "error", err.Error())
		ch <- prometheus.NewInvalidMetric(stageDesc, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for i := range list.Items {
		p := &list.Items[i]
		st := p.Status
		cur := st.Stage
		if cur == "" {
			cur = v1alpha1.StageIdle
		}
		for _, s := range stages {
			v := 0.0
			if s == cur {
				v = 1
			}
			gauge(stageDesc, v, p.Name, string(s))
		}
		if cond := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); cond != nil && cond.Status != metav1.ConditionTrue {
			gauge(notReadyDesc, 1, p.Name, cond.Reason)
		}
		if st.LastRotationTime != nil {
			gauge(lastRotationDesc, float64(st.LastRotationTime.Unix()), p.Name)
		}
		if st.NextRotationTime != nil {
			gauge(nextRotationDesc, float64(st.NextRotationTime.Unix()), p.Name)
		}
		gauge(reencryptedDesc, float64(st.Reencrypted), p.Name)
		if st.CurrentVersion > 0 {
			gauge(keyVersionDesc, float64(st.CurrentVersion), p.Name)
		}
		if st.MinDecryptionVersion > 0 {
			gauge(minDecryptionDesc, float64(st.MinDecryptionVersion), p.Name)
		}
	}
}
