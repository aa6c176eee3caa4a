package kmsplugin

import (
	"runtime"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vaultkms/vaultkms/internal/vault"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Version is the plugin's version, set at build time with -ldflags -X.
var Version = "dev"

// Metrics holds the plugin's Prometheus metrics. Labels carry only methods,
// outcomes and key versions: never key material, ciphertext or tokens.
type Metrics struct {
	operations   *prometheus.HistogramVec
	vaultCalls   *prometheus.HistogramVec
	batchSize    *prometheus.HistogramVec
	keyVersion   prometheus.Gauge
	tokenTTL     prometheus.Gauge
	healthy      prometheus.Gauge
	keyRefreshes *prometheus.CounterVec
}

func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vaultkms_kms_operation_duration_seconds",
			Help:    "KMS v2 calls served to kube-apiserver, by method and outcome (a gRPC code).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"method", "outcome"}),
		vaultCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vaultkms_vault_request_duration_seconds",
			Help:    "Requests to Vault, by operation and result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"operation", "result"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vaultkms_transit_batch_size",
			Help:    "Items per Transit request; above 1 means concurrent calls were coalesced.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}, []string{"operation"}),
		keyVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultkms_transit_key_version",
			Help: "Transit key version the plugin encrypts with and reports in key_id.",
		}),
		tokenTTL: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultkms_vault_token_ttl_seconds",
			Help: "Seconds until the Vault token expires; -1 for a token without expiry, 0 when there is no valid token.",
		}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultkms_healthy",
			Help: "1 when the plugin reports healthz ok to kube-apiserver, else 0.",
		}),
		keyRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultkms_transit_key_refreshes_total",
			Help: "Background reads of the Transit key, by result.",
		}, []string{"result"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vaultkms_build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(m.operations, m.vaultCalls, m.batchSize, m.keyVersion, m.tokenTTL, m.healthy, m.keyRefreshes, build)
	return m
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
