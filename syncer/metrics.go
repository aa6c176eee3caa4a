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
	// notRevoked counts leases given up at deletion (Vault unreachable
	// past --finalizer-timeout); expired counts Secrets past their expiry
	// without a refresh, by expiryPolicy.
	notRevoked prometheus.Counter
	expired    *prometheus.CounterVec
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
			Help: "Dynamic lease operations: issued, renewed, reissued, revoked."}, []string{"operation"}),
		vault: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_syncer_vault_requests_total",
			Help: "Vault requests made for VaultSecrets, by result."}, []string{"result"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_tenant_logins_total",
			Help: "Vault logins as tenants' service accounts by result (ok, error), and renewals of their tokens (renewed)."}, []string{"result"}),
		notRevoked: prometheus.NewCounter(prometheus.CounterOpts{Name: "vaultkms_leases_not_revoked_total",
			Help: "Leases left to end on their own because Vault could not revoke them before --finalizer-timeout at deletion."}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_secrets_expired_total",
			Help: "Secrets that reached their expiry without a successful refresh, by spec.expiryPolicy (Delete: deleted, Retain: kept with their last data)."}, []string{"policy"}),
	}
	reg.MustRegister(m.syncs, m.latency, m.expiry, m.leases, m.vault, m.logins, m.notRevoked, m.expired)
	return m
}

func (m *Metrics) sync(source, outcome string, took time.Duration) {
	m.syncs.WithLabelValues(source, outcome).Inc()
	m.latency.WithLabelValues(source).Observe(took.Seconds())
}

// Login counts a tenant login; give it to Tenants.Logins.
func (m *Metrics) Login(result string) { m.logins.WithLabelValues(result).Inc() }
