package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Series is one series of a query result: its labels and its latest value
// (a range query's last point), with the number of points.
type Series struct {
	Labels map[string]string
	Value  float64
	Points int
}

// Alert is one entry of /api/v1/alerts: an alert that is pending or firing.
type Alert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"`
	ActiveAt time.Time         `json:"activeAt"`
	Value    string            `json:"value"`
}

// RuleGroup and Rule are what /api/v1/rules reports of the loaded rules.
type RuleGroup struct {
	Name  string `json:"name"`
	Rules []Rule `json:"rules"`
}

type Rule struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	State     string `json:"state"`
	Query     string `json:"query"`
}

// api calls one endpoint of Prometheus's HTTP API and decodes its data,
// returning Prometheus's own error (a parse error, say) when it refuses.
func (p *Prometheus) api(ctx context.Context, path string, form url.Values, data any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	method, body := http.MethodGet, io.Reader(nil)
	if form != nil {
		method, body = http.MethodPost, strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, body)
	if err != nil {
		return err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.ErrorType, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

// Query evaluates expr now (/api/v1/query).
func (p *Prometheus) Query(ctx context.Context, expr string) ([]Series, error) {
	return p.query(ctx, "/api/v1/query", url.Values{"query": {expr}})
}

// QueryRange evaluates expr from start to end every step
// (/api/v1/query_range), as a dashboard panel does.
func (p *Prometheus) QueryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) ([]Series, error) {
	return p.query(ctx, "/api/v1/query_range", url.Values{"query": {expr},
		"start": {unixString(start)}, "end": {unixString(end)}, "step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}})
}

func unixString(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

func (p *Prometheus) query(ctx context.Context, path string, form url.Values) ([]Series, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api(ctx, path, form, &data); err != nil {
		return nil, err
	}
	type point [2]any // [unix time, "value"]
	switch data.ResultType {
	case "scalar":
		var v point
		if err := json.Unmarshal(data.Result, &v); err != nil {
			return nil, err
		}
		return []Series{{Labels: map[string]string{}, Value: parseValue(v[1]), Points: 1}}, nil
	case "vector", "matrix":
		var rs []struct {
			Metric map[string]string `json:"metric"`
			Value  *point            `json:"value"`
			Values []point           `json:"values"`
		}
		if err := json.Unmarshal(data.Result, &rs); err != nil {
			return nil, err
		}
		out := make([]Series, 0, len(rs))
		for _, r := range rs {
			s := Series{Labels: r.Metric}
			switch {
			case r.Value != nil:
				s.Value, s.Points = parseValue(r.Value[1]), 1
			case len(r.Values) > 0:
				s.Value, s.Points = parseValue(r.Values[len(r.Values)-1][1]), len(r.Values)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: result type %q", path, data.ResultType)
}

func parseValue(v any) float64 {
	s, _ := v.(string)
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// Alerts lists the alerts that are pending or firing (/api/v1/alerts).
func (p *Prometheus) Alerts(ctx context.Context) ([]Alert, error) {
	var data struct {
		Alerts []Alert `json:"alerts"`
	}
	err := p.api(ctx, "/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// Rules lists the loaded rule groups (/api/v1/rules).
func (p *Prometheus) Rules(ctx context.Context) ([]RuleGroup, error) {
	var data struct {
		Groups []RuleGroup `json:"groups"`
	}
	err := p.api(ctx, "/api/v1/rules", nil, &data)
	return data.Groups, err
}

// FindAlert returns the alert named name whose labels include labels, if
// it is pending or firing.
func FindAlert(alerts []Alert, name string, labels map[string]string) (Alert, bool) {
	for _, a := range alerts {
		if a.Labels["alertname"] != name {
			continue
		}
		match := true
		for k, v := range labels {
			if a.Labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return a, true
		}
	}
	return Alert{}, false
}

// Alert states WaitAlert waits for: firing, or inactive (neither pending
// nor firing: resolved, or never active).
const (
	AlertFiring   = "firing"
	AlertInactive = "inactive"
)

// WaitAlert waits until the alert named name with labels is in state
// (AlertFiring or AlertInactive) and returns how long that took; it fails
// with every active alert when it is not within timeout.
func (p *Prometheus) WaitAlert(env Env, name string, labels map[string]string, state string, timeout time.Duration) time.Duration {
	env.Helper()
	start := time.Now()
	var last []Alert
	var err error
	for {
		last, err = p.Alerts(context.Background())
		if err == nil {
			a, active := FindAlert(last, name, labels)
			if (state == AlertInactive && !active) || (state == AlertFiring && active && a.State == AlertFiring) {
				return time.Since(start)
			}
		}
		if time.Since(start) > timeout {
			env.Fatalf("alert %s%v not %s within %s (error %v); active alerts:\n%s", name, labels, state, timeout, err, describeAlerts(last))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func describeAlerts(alerts []Alert) string {
	lines := make([]string, 0, len(alerts))
	for _, a := range alerts {
		lines = append(lines, fmt.Sprintf("  %s %s %v value=%s", a.State, a.Labels["alertname"], a.Labels, a.Value))
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return "  (none)"
	}
	return strings.Join(lines, "\n")
}
