package syncer

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

var (
	notReadyDesc = prometheus.NewDesc("vaultkms_controller_vaultsecrets_not_ready",
		"VaultSecrets whose Ready condition is not True, by namespace and the condition's reason (Pending before the first pass).",
		[]string{"namespace", "reason"}, nil)
	earliestExpiryDesc = prometheus.NewDesc("vaultkms_controller_secret_expiry_earliest_seconds",
		"Seconds until the earliest status.expiresAt among a namespace's VaultSecrets, apart for Ready (ready=\"true\") and not Ready ones; negative once passed.",
		[]string{"namespace", "ready"}, nil)
)

// StatusCollector exports, at every scrape, the state of the VaultSecrets
// in the controller's cache: how many are not Ready, by namespace and
// reason, and the time left before the earliest expiry. Counters of syncs
// tell what happened; these tell what is true now, which is what an alert
// on a failing or soon expiring Secret needs. Every replica holds the same
// cache, so every replica exports the same values: aggregate with max.
// Labels are namespaces and the controller's own reasons, never names.
type StatusCollector struct {
	Reader client.Reader
	Clock  clock.PassiveClock
	Log    logr.Logger
}

func (c *StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- notReadyDesc
	ch <- earliestExpiryDesc
}

func (c *StatusCollector) Collect(ch chan<- prometheus.Metric) {
	var list v1alpha1.VaultSecretList
	if !listForScrape(ch, c.Reader, &list, notReadyDesc, c.Log, "VaultSecrets") {
		return
	}
	type nsReason struct{ ns, reason string }
	type nsReady struct {
		ns    string
		ready bool
	}
	notReady := map[nsReason]int{}
	earliest := map[nsReady]time.Time{}
	for i := range list.Items {
		vs := &list.Items[i]
		if !vs.DeletionTimestamp.IsZero() {
			continue
		}
		ready := false
		reason := ReasonPending
		if cond := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); cond != nil {
			ready = cond.Status == metav1.ConditionTrue
			if cond.Reason != "" {
				reason = cond.Reason
			}
		}
		if !ready {
			notReady[nsReason{vs.Namespace, reason}]++
		}
		if at := vs.Status.ExpiresAt; at != nil {
			k := nsReady{vs.Namespace, ready}
			if cur, ok := earliest[k]; !ok || at.Time.Before(cur) {
				earliest[k] = at.Time
			}
		}
	}
	for k, n := range notReady {
		ch <- prometheus.MustNewConstMetric(notReadyDesc, prometheus.GaugeValue, float64(n), k.ns, k.reason)
	}
	now := c.Clock.Now()
	for k, at := range earliest {
		ready := "false"
		if k.ready {
			ready = "true"
		}
		ch <- prometheus.MustNewConstMetric(earliestExpiryDesc, prometheus.GaugeValue, at.Sub(now).Seconds(), k.ns, ready)
	}
}

// listForScrape lists from the cache for one scrape, read only (the
// cache's objects are not copied for every scrape). A failure is logged
// and reported to Prometheus as an invalid metric of desc.
func listForScrape(ch chan<- prometheus.Metric, r client.Reader, list client.ObjectList, desc *prometheus.Desc, log logr.Logger, what string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		log.Info("cannot list "+what+" for metrics", "error", err.Error())
		ch <- prometheus.NewInvalidMetric(desc, err)
		return false
	}
	return true
}
