package syncer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the syncer's Prometheus metrics; labels carry kinds and
// outcomes only, never names of paths, secrets or tenants' data.
type Metrics struct {
	syncs   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	expiry  prometheus.Histogram
	leases  *prometheus.CounterVec
	vault   *prometheus.CounterVec
	logins  *prometheus.CounterVec
}

// NewMetrics registers the syncer's metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_syncs_total",
			Help: "VaultSecret syncs by source kind and outcome (synced, renewed, unchanged, failed, conflict, error)."}, []string{"source", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vaultkms_sync_duration_seconds",
			Help: "Duration of one VaultSecret sync.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"source"}),
		expiry: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vaultkms_secret_time_to_expiry_seconds",
			Help: "Time from a successful sync to the Secret's expiry.", Buckets: prometheus.ExponentialBuckets(10, 3, 10)}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_lease_operations_total",
			Help: "Dynamic lease renewals, re-issues and revocations."}, []string{"operation"}),
		vault: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_syncer_vault_requests_total",
			Help: "Vault requests made for VaultSecrets, by result."}, []string{"result"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_tenant_logins_total",
			Help: "Vault logins as tenants' service accounts by result (ok, error), and renewals of their tokens (renewed)."}, []string{"result"}),
	}
	reg.MustRegister(m.syncs, m.latency, m.expiry, m.leases, m.vault, m.logins)
	return m
}

func (m *Metrics) sync(source, outcome string, took time.Duration) {
	m.syncs.WithLabelValues(source, outcome).Inc()
	m.latency.WithLabelValues(source).Observe(took.Seconds())
}

// Login counts a tenant login; give it to Tenants.Logins.
func (m *Metrics) Login(result string) { m.logins.WithLabelValues(result).Inc() }
