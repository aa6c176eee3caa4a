package kmsplugin

import (
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/internal/version"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Version is the plugin's version, set at build time with -ldflags -X.
var Version = "dev"

// Metrics holds the plugin's Prometheus metrics, all named
// vaultkms_plugin_*. Labels carry only methods, results and key versions:
// never key material, ciphertext or tokens.
type Metrics struct {
	operations   *prometheus.HistogramVec
	vaultCalls   *prometheus.HistogramVec
	batchSize    *prometheus.HistogramVec
	keyVersion   prometheus.Gauge
	keyCreated   prometheus.Gauge
	tokenTTL     prometheus.Gauge
	healthy      prometheus.Gauge
	keyRefreshes *prometheus.CounterVec
}

func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vaultkms_plugin_kms_operation_duration_seconds",
			Help:    "KMS v2 calls served to kube-apiserver, by method and result (a gRPC code).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"method", "result"}),
		vaultCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vaultkms_plugin_vault_request_duration_seconds",
			Help:    "Requests to Vault, by operation and result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"operation", "result"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vaultkms_plugin_transit_batch_size",
			Help:    "Items per Transit request; above 1 means concurrent calls were coalesced.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}, []string{"operation"}),
		keyVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultkms_plugin_transit_key_version",
			Help: "Transit key version the plugin encrypts with and reports in key_id.",
		}),
		keyCreated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultkms_plugin_transit_key_created_timestamp_seconds",
			Help: "When Vault created the Transit key version the plugin encrypts with (Unix seconds); time() minus it is the key's age, for a rotation overdue.",
		}),
		tokenTTL: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultkms_plugin_vault_token_ttl_seconds",
			Help: "Seconds until the Vault token expires; -1 for a token without expiry, 0 when there is no valid token.",
		}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultkms_plugin_healthy",
			Help: "1 when the plugin reports healthz ok to kube-apiserver, else 0.",
		}),
		keyRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultkms_plugin_transit_key_refreshes_total",
			Help: "Background reads of the Transit key, by result.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.operations, m.vaultCalls, m.batchSize, m.keyVersion, m.keyCreated, m.tokenTTL, m.healthy, m.keyRefreshes,
		version.BuildInfo("plugin", Version))
	return m
}

// SessionCounter is the part of the Vault session the login and renewal
// counters read.
type SessionCounter interface{ Counts() vault.Counts }

// RegisterVaultCounters exports the session's logins and token renewals
// and the client's moves between --vault-addr addresses. They are read at
// scrape time from counters the session and client keep anyway.
func RegisterVaultCounters(reg prometheus.Registerer, s SessionCounter, failovers func() uint64) {
	counter := func(name, help, result string, f func() float64) prometheus.Collector {
		opts := prometheus.CounterOpts{Name: name, Help: help}
		if result != "" {
			opts.ConstLabels = prometheus.Labels{"result": result}
		}
		return prometheus.NewCounterFunc(opts, f)
	}
	const loginsHelp = "Vault logins of the plugin, by result (ok, error)."
	const renewalsHelp = "Renewals of the plugin's Vault token, by result (ok, error)."
	reg.MustRegister(
		counter("vaultkms_plugin_vault_logins_total", loginsHelp, "ok", func() float64 { return float64(s.Counts().Logins) }),
		counter("vaultkms_plugin_vault_logins_total", loginsHelp, "error", func() float64 { return float64(s.Counts().LoginFailures) }),
		counter("vaultkms_plugin_vault_token_renewals_total", renewalsHelp, "ok", func() float64 { return float64(s.Counts().Renewals) }),
		counter("vaultkms_plugin_vault_token_renewals_total", renewalsHelp, "error", func() float64 { return float64(s.Counts().RenewalFailures) }),
		counter("vaultkms_plugin_vault_address_failovers_total",
			"Moves to another --vault-addr address because the one in use could not be reached.", "",
			func() float64 { return float64(failovers()) }),
	)
}

// NewRegistry returns a registry with the Go and process collectors, ready
// for the plugin's metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func (p *Plugin) observeOp(method string, start time.Time, code codes.Code) {
	if p.m != nil {
		p.m.operations.WithLabelValues(method, code.String()).Observe(p.clock.Since(start).Seconds())
	}
}

func (p *Plugin) observeVault(op string, start time.Time, err error) {
	if p.m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = vault.Classify(err).String()
	}
	p.m.vaultCalls.WithLabelValues(op, result).Observe(p.clock.Since(start).Seconds())
}

func (p *Plugin) countRefresh(result string) {
	if p.m != nil {
		p.m.keyRefreshes.WithLabelValues(result).Inc()
	}
}
