package harness

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Prometheus is a real Prometheus server (bin/prometheus, built by `make
// tools`) scraping and evaluating rules at a short interval, so alerts fire
// and resolve within seconds. Its HTTP API is at URL.
type Prometheus struct {
	URL string
	Dir string

	env     Env
	proc    *process
	logPath string
}

// PrometheusConfig is what StartPrometheus writes into prometheus.yml.
type PrometheusConfig struct {
	// Interval is the scrape and rule evaluation interval; default 1s.
	Interval time.Duration
	// ScrapeConfigs are the entries of scrape_configs, as prometheus.yml
	// spells them (job_name, static_configs, tls_config, ...).
	ScrapeConfigs []map[string]any
	// RuleGroups are the entries of a rule file's groups (name, rules),
	// such as a PrometheusRule's spec.groups.
	RuleGroups []any
}

// StartPrometheus starts Prometheus on a free loopback port with its
// storage in a temporary directory, and waits until it is ready and has
// loaded its rules. It stops on cleanup; if the test failed, the end of its
// log is printed.
func StartPrometheus(env Env, cfg PrometheusConfig) *Prometheus {
	env.Helper()
	bin := Binary(env, "prometheus")
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	p := &Prometheus{env: env, Dir: env.TempDir()}
	p.logPath = filepath.Join(p.Dir, "prometheus.log")
	configPath, err := writePrometheusConfig(p.Dir, cfg)
	if err != nil {
		env.Fatalf("prometheus config: %v", err)
	}
	port, err := FreePort()
	if err != nil {
		env.Fatalf("free port: %v", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p.URL = "http://" + addr
	proc, err := startProcess(bin, []string{
		"--config.file=" + configPath,
		"--storage.tsdb.path=" + filepath.Join(p.Dir, "data"),
		"--web.listen-address=" + addr,
		// Alerts keep their state within one run only.
		"--storage.tsdb.retention.time=1d",
		"--log.level=info",
	}, p.logPath)
	if err != nil {
		env.Fatalf("%v", err)
	}
	p.proc = proc
	env.Cleanup(func() {
		p.proc.stop(10 * time.Second)
		if f, ok := env.(interface{ Failed() bool }); ok && f.Failed() {
			env.Logf("prometheus log (end):\n%s", tail(p.Log(), 8<<10))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.ready(len(cfg.RuleGroups) > 0)
		if err == nil {
			return p
		}
		select {
		case <-proc.done:
			env.Fatalf("prometheus exited: %v\n%s", err, tail(p.Log(), 8<<10))
		default:
		}
		if time.Now().After(deadline) {
			env.Fatalf("prometheus not ready within 30s: %v\n%s", err, tail(p.Log(), 8<<10))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ready is nil once /-/ready answers 200 and, with rules, the rules API
// lists them: a rule file Prometheus refused would otherwise only show in
// its log.
func (p *Prometheus) ready(rules bool) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(p.URL + "/-/ready")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/-/ready: %s", resp.Status)
	}
	if !rules {
		return nil
	}
	groups, err := p.Rules(context.Background())
	if err != nil {
		return err
	}
	if len(groups) == 0 {
		return fmt.Errorf("no rule group loaded")
	}
	return nil
}

func writePrometheusConfig(dir string, cfg PrometheusConfig) (string, error) {
	interval := cfg.Interval.String()
	doc := map[string]any{
		"global": map[string]any{
			"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval,
		},
		"scrape_configs": cfg.ScrapeConfigs,
	}
	if len(cfg.RuleGroups) > 0 {
		rules, err := yaml.Marshal(map[string]any{"groups": cfg.RuleGroups})
		if err != nil {
			return "", err
		}
		rulesPath := filepath.Join(dir, "rules.yaml")
		if err := os.WriteFile(rulesPath, rules, 0o600); err != nil {
			return "", err
		}
		doc["rule_files"] = []string{rulesPath}
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "prometheus.yml")
	return path, os.WriteFile(path, b, 0o600)
}

// Log returns Prometheus's log.
func (p *Prometheus) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
