package docs

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

var (
	alertRule = regexp.MustCompile(`(?m)^\s*- alert: (\w+)`)
	// waitAlert matches prom.WaitAlert(t, "Name", labels, harness.State, ...)
	// in the live test.
	waitAlert = regexp.MustCompile(`WaitAlert\(t, "(\w+)", [^,]+, harness\.(AlertFiring|AlertInactive)`)
)

// TestEveryAlertFiredLive holds the README's and metrics.md's claim that
// `make test` fires and resolves each of the chart's alerts in a real
// Prometheus: every alert in the PrometheusRule must be waited for, both
// firing and inactive, in e2e/prometheus_test.go, and have a row in the
// metrics.md table of the causes that test brings about. Four alerts had
// only promtool cases while the docs said every alert fired for real.
func TestEveryAlertFiredLive(t *testing.T) {
	rules, err := os.ReadFile("../charts/vaultkms/templates/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.ReadFile("../e2e/prometheus_test.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	_, proven, ok := strings.Cut(string(doc), "## How the alerts and the dashboard are proven")
	if !ok {
		t.Fatal("metrics.md has no section \"How the alerts and the dashboard are proven\"")
	}
	waited := map[string]map[string]bool{}
	for _, m := range waitAlert.FindAllStringSubmatch(string(live), -1) {
		if waited[m[1]] == nil {
			waited[m[1]] = map[string]bool{}
		}
		waited[m[1]][m[2]] = true
	}
	names := alertRule.FindAllStringSubmatch(string(rules), -1)
	if len(names) < 5 {
		t.Fatalf("only %d alerts found in the PrometheusRule", len(names))
	}
	for _, m := range names {
		name := m[1]
		if !waited[name]["AlertFiring"] {
			t.Errorf("%s: e2e/prometheus_test.go never waits for it to fire", name)
		}
		if !waited[name]["AlertInactive"] {
			t.Errorf("%s: e2e/prometheus_test.go never waits for it to resolve", name)
		}
		if !regexp.MustCompile("(?m)^\\s*\\|[^\\n]*`" + name + "`[^\\n]*\\|").MatchString(proven) {
			t.Errorf("%s: no row in metrics.md's table of the causes TestPrometheusAlerts brings about", name)
		}
	}
}
