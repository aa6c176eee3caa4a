package syncer

import (
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

var connectionReadyDesc = prometheus.NewDesc("vaultkms_controller_connection_ready",
	"1 when a ClusterVaultConnection is Ready (address parsed, CA loaded), else 0, with its Ready reason (Pending before the first look).",
	[]string{"connection", "reason"}, nil)

// ConnectionCollector exports, at every scrape, each ClusterVaultConnection's
// Ready condition from the controller's cache. Labels are the connection's
// name and the controller's own reason: never an address or a Secret.
type ConnectionCollector struct {
	Reader client.Reader
	Log    logr.Logger
}

func (c *ConnectionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- connectionReadyDesc }

func (c *ConnectionCollector) Collect(ch chan<- prometheus.Metric) {
	var list v1alpha1.ClusterVaultConnectionList
	if !listForScrape(ch, c.Reader, &list, connectionReadyDesc, c.Log, "ClusterVaultConnections") {
		return
	}
	for i := range list.Items {
		cvc := &list.Items[i]
		ready, reason := 0.0, ReasonPending
		if cond := meta.FindStatusCondition(cvc.Status.Conditions, "Ready"); cond != nil && cond.ObservedGeneration == cvc.Generation {
			reason = cond.Reason
			if cond.Status == metav1.ConditionTrue {
				ready = 1
			}
		}
		ch <- prometheus.MustNewConstMetric(connectionReadyDesc, prometheus.GaugeValue, ready, cvc.Name, reason)
	}
}
