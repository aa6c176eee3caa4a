package syncer

import (
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/internal/version"
)

// Metrics are the syncer's Prometheus metrics, all named
// vaultkms_controller_*; labels carry kinds, operations and results only,
// never names of paths, secrets or tenants' data. The state of the
// VaultSecrets themselves (not Ready, time left) is exported at scrape
// time by StatusCollector.
type Metrics struct {
	syncs    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	leases   *prometheus.CounterVec
	vault    *prometheus.HistogramVec
	logins   *prometheus.CounterVec
	restarts *prometheus.CounterVec
	// notRevoked counts leases given up at deletion (Vault unreachable
	// past --finalizer-timeout), and leases of a Vault the connection no
	// longer reaches, never sent to the new one; expired counts Secrets past their expiry
	// without a refresh, by expiryPolicy.
	notRevoked prometheus.Counter
	expired    *prometheus.CounterVec
}

// RegisterCacheCollectors registers the metrics read from the cache at
// each scrape: the VaultSecrets' readiness and expiry, and the
// ClusterVaultConnections' readiness. The controller and the test of
// docs/metrics.md both call it, so no collector the controller exports
// escapes that test.
func RegisterCacheCollectors(reg prometheus.Registerer, r client.Reader, clk clock.PassiveClock, log logr.Logger) {
	reg.MustRegister(&StatusCollector{Reader: r, Clock: clk, Log: log}, &ConnectionCollector{Reader: r, Log: log})
}

// NewMetrics registers the syncer's metrics and the controller's
// vaultkms_controller_build_info.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_controller_syncs_total",
			Help: "VaultSecret syncs by source kind and result (synced, renewed, unchanged, failed, conflict, error, throttled, recheck)."}, []string{"source", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vaultkms_controller_sync_duration_seconds",
			Help: "Duration of one VaultSecret sync.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"source"}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_controller_lease_operations_total",
			Help: "Dynamic lease operations (issue, renew, reissue, revoke) by result (ok, or why Vault failed it)."}, []string{"operation", "result"}),
		vault: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vaultkms_controller_vault_request_duration_seconds",
			Help:    "Vault requests made for VaultSecrets (read, renew, revoke), by result; logins are counted apart.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"operation", "result"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_controller_tenant_logins_total",
			Help: "Vault logins as tenants' service accounts by result (ok, error), and renewals of their tokens (renewed)."}, []string{"result"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_controller_restarts_total",
			Help: "Rollout restarts of spec.rolloutRestartTargets after new Secret data (debounced per workload by --restart-min-interval), by namespace, workload kind and result (ok, error)."}, []string{"namespace", "kind", "result"}),
		notRevoked: prometheus.NewCounter(prometheus.CounterOpts{Name: "vaultkms_controller_leases_not_revoked_total",
			Help: "Leases left to end on their own: at deletion, Vault unreachable until --finalizer-timeout or the revocation refused outright (403, token request refused); at any time, a lease issued by another Vault cluster than the one its connection reaches now (never sent there)."}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vaultkms_controller_secrets_expired_total",
			Help: "Secrets that reached their expiry without a successful refresh, by spec.expiryPolicy (Delete: counted when deleted; Retain: counted when kept with their last data)."}, []string{"policy"}),
	}
	reg.MustRegister(m.syncs, m.latency, m.leases, m.vault, m.logins, m.restarts, m.notRevoked, m.expired,
		version.BuildInfo("controller", version.Version))
	return m
}

func (m *Metrics) sync(source, result string, took time.Duration) {
	m.syncs.WithLabelValues(source, result).Inc()
	m.latency.WithLabelValues(source).Observe(took.Seconds())
}

// Login counts a tenant login; give it to Tenants.Logins.
func (m *Metrics) Login(result string) { m.logins.WithLabelValues(result).Inc() }

// countRestart counts one rollout restart; nil-safe.
func (m *Metrics) countRestart(namespace, kind, result string) {
	if m == nil {
		return
	}
	m.restarts.WithLabelValues(namespace, kind, result).Inc()
}

// resultOf is the result label of a Vault call: ok, or its error's kind
// (unavailable, denied, invalid, not_found, ...), never its message.
func resultOf(err error) string {
	if err == nil {
		return "ok"
	}
	return vault.Classify(err).String()
}
