package docs

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/kmsplugin"
	"github.com/vaultkms/vaultkms/syncer"
	"github.com/vaultkms/vaultkms/verifier/autopilot"
	"github.com/vaultkms/vaultkms/verifier/publisher"
)

// metricName matches a vaultkms metric name in a query or in prose.
var metricName = regexp.MustCompile(`\bvaultkms_[a-z0-9_]*[a-z0-9]`)

// descName reads the fqName out of a Desc's String().
var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// capture is a Registerer that keeps what is registered, so the names of
// every metric the components export can be read from their Descs, even
// of vectors that have no series yet.
type capture struct{ names map[string]bool }

func (c *capture) Register(col prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { col.Describe(ch); close(ch) }()
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			c.names[m[1]] = true
		}
	}
	return nil
}

func (c *capture) MustRegister(cols ...prometheus.Collector) {
	for _, col := range cols {
		_ = c.Register(col)
	}
}

func (c *capture) Unregister(prometheus.Collector) bool { return false }

type noCounts struct{}

func (noCounts) Counts() vault.Counts { return vault.Counts{} }

// exported is every vaultkms metric the plugin, the controller and the
// auditor register, by the same constructors their binaries call.
func exported() map[string]bool {
	c := &capture{names: map[string]bool{}}
	kmsplugin.NewMetrics(c)
	kmsplugin.RegisterVaultCounters(c, noCounts{}, func() uint64 { return 0 })
	syncer.NewMetrics(c)
	syncer.RegisterCacheCollectors(c, nil, clock.RealClock{}, logr.Discard())
	publisher.NewMetrics(c)
	c.MustRegister(&autopilot.StatusCollector{Log: logr.Discard()})
	return c.names
}

// base strips the series suffixes of a histogram.
func base(name string, exp map[string]bool) string {
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		if b, ok := strings.CutSuffix(name, suf); ok && exp[b] {
			return b
		}
	}
	return name
}

// Every metric the dashboard and the alerts query is exported by some
// component and listed in docs/metrics.md, and every exported metric is
// listed there too: a renamed metric cannot leave a panel or an alert
// silently empty, nor the reference stale.
func TestDashboardAndAlertsUseDocumentedExportedMetrics(t *testing.T) {
	exp := exported()
	if len(exp) < 20 {
		t.Fatalf("only %d metrics captured from the components: %v", len(exp), exp)
	}
	doc, err := os.ReadFile("metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, n := range metricName.FindAllString(string(doc), -1) {
		documented[base(n, exp)] = true
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err := os.ReadFile("../charts/vaultkms/dashboards/vaultkms.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	used := map[string][]string{} // metric -> where
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("dashboard panel %q queries no vaultkms metric: %s", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[base(n, exp)] = append(used[base(n, exp)], "dashboard panel "+p.Title)
			}
		}
	}
	rules, err := os.ReadFile("../charts/vaultkms/templates/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, line := range strings.Split(string(rules), "\n") {
		if strings.Contains(line, "- alert:") {
			alerts++
		}
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, n := range metricName.FindAllString(line, -1) {
			used[base(n, exp)] = append(used[base(n, exp)], "prometheusrule.yaml")
		}
	}
	if alerts == 0 || len(used) == 0 {
		t.Fatalf("found %d alerts and %d metrics used; the files moved?", alerts, len(used))
	}
	for n, where := range used {
		if !exp[n] {
			t.Errorf("%s (used by %s) is exported by no component", n, where[0])
		}
		if !documented[n] {
			t.Errorf("%s (used by %s) is not in docs/metrics.md", n, where[0])
		}
	}
	var undocumented []string
	for n := range exp {
		if !documented[n] {
			undocumented = append(undocumented, n)
		}
	}
	sort.Strings(undocumented)
	if len(undocumented) > 0 {
		t.Errorf("exported but not in docs/metrics.md: %v", undocumented)
	}
	for n := range documented {
		if !exp[n] && strings.Count(n, "_") > 1 {
			t.Errorf("docs/metrics.md lists %s, which no component exports", n)
		}
	}
}
