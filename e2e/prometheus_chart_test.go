package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// What TestPrometheusAlerts takes from the chart: the rules of its
// PrometheusRule, a scrape configuration equivalent to its ServiceMonitors
// and its Grafana dashboard, all rendered by `helm template` with
// promChartValues.

// promChartValues render everything the monitoring needs, with every `for`
// and threshold small enough for the alerts to fire and resolve within
// seconds, and the ServiceMonitors scraping every second.
var promChartValues = []string{
	chartVaultAddr,
	"auditor.enabled=true", "auditor.etcdEndpoints=https://etcd.example:2379", "auditor.transitKey=kubernetes",
	"auditor.rotation.enabled=true", "auditor.rotation.encryptionConfigResources=secrets",
	"metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.interval=1s",
	"grafana.dashboards.enabled=true",
	"metrics.prometheusRule.enabled=true",
	"metrics.prometheusRule.pluginUnhealthyFor=2s",
	"metrics.prometheusRule.loginFailingFor=2s",
	"metrics.prometheusRule.vaultSecretFailingFor=2s",
	// Above the 15s ttl of the test's VaultSecret: a failing one fires.
	"metrics.prometheusRule.vaultSecretExpiringSeconds=60",
	"metrics.prometheusRule.vaultSecretExpiringFor=2s",
	// The schema's least (the test's auditor scans every 5s).
	"metrics.prometheusRule.scanMaxAgeSeconds=60",
	"metrics.prometheusRule.scanFailingFor=2s",
	"metrics.prometheusRule.rotationStoppedFor=2s",
	"metrics.prometheusRule.controllerDownFor=2s",
	"metrics.prometheusRule.staleObjectsFor=2s",
	"metrics.prometheusRule.auditorAbsentFor=2s",
	// The key made at the test's start is overdue a minute later, until
	// the autopilot rotates it.
	"metrics.prometheusRule.keyMaxAgeSeconds=60",
	"metrics.prometheusRule.keyRotationOverdueFor=2s",
}

// promNamespace is the release's namespace in the rendered chart.
const promNamespace = "vaultkms-system"

func objectsOf(objs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, o := range objs {
		if o["kind"] == kind {
			out = append(out, o)
		}
	}
	return out
}

// field reads a nested field of a rendered object ("spec", "selector", ...).
func field(o any, keys ...string) any {
	for _, k := range keys {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[k]
	}
	return o
}

func stringMap(o any) map[string]string {
	out := map[string]string{}
	m, _ := o.(map[string]any)
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}

func containsLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return len(want) > 0
}

// chartRuleGroups are the rendered PrometheusRule's spec.groups, as
// `make test-alerts` hands them to promtool.
func chartRuleGroups(t *testing.T, objs []map[string]any) []any {
	t.Helper()
	rules := objectsOf(objs, "PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("the chart rendered %d PrometheusRules, want 1", len(rules))
	}
	groups, _ := field(rules[0], "spec", "groups").([]any)
	if len(groups) == 0 {
		t.Fatal("the PrometheusRule has no groups")
	}
	return groups
}

// serviceMonitorScrapes turns each rendered ServiceMonitor into the scrape
// job the Prometheus Operator generates for it: job_name
// serviceMonitor/<namespace>/<name>/0, the endpoint's path, interval and
// honorLabels,
// and the target labels job (the Service's name), namespace, service,
// endpoint, pod and container. Only the target's address is the test's:
// addrs maps a component (app.kubernetes.io/component) to the host:port
// its process listens on.
func serviceMonitorScrapes(t *testing.T, objs []map[string]any, addrs map[string]string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, sm := range objectsOf(objs, "ServiceMonitor") {
		sel := stringMap(field(sm, "spec", "selector", "matchLabels"))
		component := sel["app.kubernetes.io/component"]
		addr, ok := addrs[component]
		if !ok {
			t.Fatalf("ServiceMonitor %s selects component %q, which the test does not run", objName(sm), component)
		}
		var svc map[string]any
		for _, s := range objectsOf(objs, "Service") {
			if containsLabels(stringMap(field(s, "metadata", "labels")), sel) {
				svc = s
			}
		}
		if svc == nil {
			t.Fatalf("ServiceMonitor %s selects no rendered Service", objName(sm))
		}
		eps, _ := field(sm, "spec", "endpoints").([]any)
		if len(eps) != 1 {
			t.Fatalf("ServiceMonitor %s has %d endpoints, want 1", objName(sm), len(eps))
		}
		ep := stringMap(eps[0])
		// The Service port the endpoint names, its target port, and the
		// container of the selected pods that declares it.
		targetPort := ""
		ports, _ := field(svc, "spec", "ports").([]any)
		for _, p := range ports {
			if pm := stringMap(p); pm["name"] == ep["port"] {
				targetPort = pm["targetPort"]
			}
		}
		pod, container := podContainer(objs, stringMap(field(svc, "spec", "selector")), targetPort)
		if container == "" {
			t.Fatalf("Service %s: no rendered container declares port %q", objName(svc), targetPort)
		}
		out = append(out, map[string]any{
			"job_name":        fmt.Sprintf("serviceMonitor/%s/%s/0", promNamespace, objName(sm)),
			"scrape_interval": ep["interval"],
			"metrics_path":    ep["path"],
			"honor_labels":    ep["honorLabels"] == "true",
			"static_configs": []any{map[string]any{"targets": []string{addr}, "labels": map[string]string{
				"job": objName(svc), "namespace": promNamespace, "service": objName(svc),
				"endpoint": ep["port"], "pod": pod, "container": container,
			}}},
		})
	}
	if len(out) != len(addrs) {
		t.Fatalf("the chart rendered %d ServiceMonitors for the %d components %v", len(out), len(addrs), addrs)
	}
	return out
}

// podContainer finds the Deployment whose pods the selector selects and
// the container declaring port; the pod name stands for its first pod.
func podContainer(objs []map[string]any, selector map[string]string, port string) (pod, container string) {
	for _, d := range objectsOf(objs, "Deployment") {
		if !containsLabels(stringMap(field(d, "spec", "template", "metadata", "labels")), selector) {
			continue
		}
		cs, _ := field(d, "spec", "template", "spec", "containers").([]any)
		for _, c := range cs {
			ps, _ := field(c, "ports").([]any)
			for _, p := range ps {
				if stringMap(p)["name"] == port {
					return objName(d) + "-0", stringMap(c)["name"]
				}
			}
		}
	}
	return "", ""
}

// pluginScrape is docs/metrics.md's plugin job ("Scraping the plugin")
// with the node discovery replaced by the one node's address.
func pluginScrape(addr string) map[string]any {
	return map[string]any{
		"job_name":       "vaultkms-plugin",
		"static_configs": []any{map[string]any{"targets": []string{addr}, "labels": map[string]string{"node": "control-plane-1"}}},
	}
}

// apiServerScrape scrapes kube-apiserver's /metrics over TLS with the
// control plane's admin client certificate, as kube-prometheus's job
// "apiserver" does with its service account.
func apiServerScrape(t *testing.T, cp *harness.ControlPlane) map[string]any {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := cp.Config
	if len(cfg.CertData) == 0 || len(cfg.KeyData) == 0 {
		t.Fatal("the control plane's admin config holds no client certificate")
	}
	return map[string]any{
		"job_name": "apiserver",
		"scheme":   "https",
		"tls_config": map[string]string{"ca_file": write("ca.crt", cfg.CAData),
			"cert_file": write("client.crt", cfg.CertData), "key_file": write("client.key", cfg.KeyData)},
		"static_configs": []any{map[string]any{"targets": []string{strings.TrimPrefix(strings.TrimSuffix(cfg.Host, "/"), "https://")},
			"labels": map[string]string{"namespace": "default", "service": "kubernetes", "endpoint": "https"}}},
	}
}

// panelQuery is one query of a dashboard panel.
type panelQuery struct{ panel, expr string }

// grafanaVariables are Grafana's built-in interval variables a query may
// use, replaced by what Grafana would give them for a 1s scrape interval.
var grafanaVariables = strings.NewReplacer(
	"${__rate_interval}", "1m", "$__rate_interval", "1m",
	"${__interval}", "1s", "$__interval", "1s",
	"${__range}", "5m", "$__range", "5m",
)

var unknownVariable = regexp.MustCompile(`\$\{?[A-Za-z_]\w*`)

// dashboardQueries are the queries of every panel of the rendered
// dashboard ConfigMap, rows' panels included, with Grafana's variables
// replaced.
func dashboardQueries(t *testing.T, objs []map[string]any) []panelQuery {
	t.Helper()
	var raw string
	for _, cm := range objectsOf(objs, "ConfigMap") {
		if stringMap(field(cm, "metadata", "labels"))["grafana_dashboard"] == "1" {
			raw = stringMap(field(cm, "data"))["vaultkms.json"]
		}
	}
	if raw == "" {
		t.Fatal("the chart rendered no dashboard ConfigMap with vaultkms.json")
	}
	type panel struct {
		Title   string            `json:"title"`
		Targets []json.RawMessage `json:"targets"`
		Panels  []json.RawMessage `json:"panels"`
	}
	var out []panelQuery
	var walk func([]json.RawMessage)
	walk = func(panels []json.RawMessage) {
		for _, raw := range panels {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("dashboard panel: %v", err)
			}
			for _, tr := range p.Targets {
				var target struct {
					Expr string `json:"expr"`
				}
				if err := json.Unmarshal(tr, &target); err != nil {
					t.Fatalf("panel %q: %v", p.Title, err)
				}
				expr := grafanaVariables.Replace(target.Expr)
				if v := unknownVariable.FindString(expr); v != "" {
					t.Errorf("panel %q uses the dashboard variable %s, which the test cannot fill in: %s", p.Title, v, target.Expr)
				}
				out = append(out, panelQuery{p.Title, expr})
			}
			walk(p.Panels)
		}
	}
	var d struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	walk(d.Panels)
	if len(out) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return out
}

// checkDashboard evaluates every panel query over [start, now] as Grafana
// draws a panel (a range query) and fails on a query Prometheus refuses or
// one that returns no series.
func checkDashboard(t *testing.T, prom *harness.Prometheus, queries []panelQuery, start time.Time) {
	t.Helper()
	end := time.Now()
	for _, q := range queries {
		series, err := prom.QueryRange(context.Background(), q.expr, start, end, time.Second)
		switch {
		case err != nil:
			t.Errorf("dashboard panel %q: %s: %v", q.panel, q.expr, err)
		case len(series) == 0:
			t.Errorf("dashboard panel %q: %s returned no series over the test's %s", q.panel, q.expr, end.Sub(start).Round(time.Second))
		}
	}
	t.Logf("dashboard: %d panel queries evaluated over %s", len(queries), end.Sub(start).Round(time.Second))
}
