// Package apiservers is trim's API server gate. It finds every
// kube-apiserver (from the "kubernetes" Service's EndpointSlices, or a list
// the operator gives), reads the key_id each one reports in its metrics, and
// decides, as a pure function, whether all of them have been on the target
// key_id long enough that no write under an older version can still land.
// It fails closed: an API server that cannot be read blocks the gate.
package apiservers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vaultkms/verifier/keysource"
)

// MinSettle is the shortest time every API server must have reported the
// target key_id before trim (or re-encryption) trusts a scan. It comes
// from kube-apiserver's own rules: when a switch to a new key_id fails
// (the Encrypt of the new DEK seed errors), the API server keeps writing
// with its old seed, under the old key_id, for about three minutes after
// its last good Status; and it learns of a change only at its next Status
// poll, once a minute when healthy. Three minutes plus one poll.
const MinSettle = 3*time.Minute + time.Minute

// DefaultSettle is MinSettle with a minute of margin.
const DefaultSettle = MinSettle + time.Minute

// CheckSettle refuses a settle time below MinSettle, naming the field
// (the flag or the RotationPolicy field) that set it.
func CheckSettle(field string, settle time.Duration) error {
	if settle < MinSettle {
		return fmt.Errorf("%s %s is too short: it must be at least %s (kube-apiserver may keep writing under the old key for about 3m after a failed key switch, and sees a new key_id only at its next Status poll, 1m)", field, settle, MinSettle)
	}
	return nil
}

// FirstReport is how long after a rotation the last API server may take
// to first report the new key_id: the plugin reads the key every 10 s
// (its --refresh-interval), kube-apiserver asks the plugin's Status once
// a minute when healthy and only then switches key_id, and a minute more
// is left for a poll that is late or retried.
const FirstReport = 2 * time.Minute

// CheckTimeout refuses an API server gate timeout that the gate cannot
// meet: it passes no sooner than settle after the last API server first
// reports the new key_id, which can be FirstReport after the rotation.
// A shorter timeout stops every cycle after it has rotated.
func CheckTimeout(field string, timeout, settle time.Duration) error {
	if timeout < settle+FirstReport {
		return fmt.Errorf("%s %s is too short for a settle time of %s: the API server gate passes no sooner than the settle time after every API server first reports the new key_id, which kube-apiserver does at its next Status poll (once a minute) after the plugin sees the rotation (every 10s); set it to at least %s (the settle time plus %s)", field, timeout, settle, settle+FirstReport, FirstReport)
	}
	return nil
}

// MaxReportAge is how old an API server's newest key_id report may be: it
// polls Status every minute when healthy, so an older report means its
// plugin is failing and its key is unknown.
const MaxReportAge = 3 * time.Minute

// Discover returns the metrics URL of every API server endpoint listed in
// the default/kubernetes EndpointSlices.
func Discover(ctx context.Context, kube kubernetes.Interface) ([]string, error) {
	list, err := kube.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err != nil {
		return nil, fmt.Errorf("list the kubernetes EndpointSlices to find every API server (or pass --apiserver-metrics-url for each): %w", err)
	}
	var urls []string
	for _, s := range list.Items {
		port := int32(0)
		for _, p := range s.Ports {
			if p.Port != nil && (p.Name == nil || *p.Name == "https" || len(s.Ports) == 1) {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				urls = append(urls, "https://"+net.JoinHostPort(a, strconv.Itoa(int(port)))+"/metrics")
			}
		}
	}
	sort.Strings(urls)
	urls = compact(urls)
	if len(urls) == 0 {
		return nil, errors.New("the kubernetes EndpointSlices list no API server: pass --apiserver-metrics-url for each API server")
	}
	return urls, nil
}

func compact(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// Report is what one API server's metrics and readiness said.
type Report struct {
	URL  string                   `json:"url"`
	Keys []keysource.APIServerKey `json:"keys,omitempty"`
	Err  string                   `json:"error,omitempty"`
	// KMSNotReady says why the API server's KMS readiness check
	// (/readyz/kms-providers, or kms-provider-N without automatic reload)
	// is not ok; empty when it is.
	KMSNotReady string `json:"kmsNotReady,omitempty"`
}

// Fetch reads each URL's metrics with cfg's credentials. The kubeconfig's
// server name is kept for TLS, so an API server reached by IP is verified
// against the certificate the kubeconfig trusts.
func Fetch(ctx context.Context, cfg *rest.Config, urls []string) ([]Report, error) {
	c := rest.CopyConfig(cfg)
	if c.TLSClientConfig.ServerName == "" {
		if h := hostOf(cfg.Host); h != "" {
			c.TLSClientConfig.ServerName = h
		}
	}
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, err
	}
	out := make([]Report, 0, len(urls))
	for _, u := range urls {
		r := Report{URL: u}
		keys, err := fetchOne(ctx, hc, u)
		if err != nil {
			r.Err = err.Error()
		}
		r.Keys = keys
		if err == nil {
			r.KMSNotReady = kmsReadiness(ctx, hc, u)
		}
		out = append(out, r)
	}
	return out, nil
}

func hostOf(h string) string {
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

func fetchOne(ctx context.Context, hc *http.Client, u string) ([]keysource.APIServerKey, error) {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return keysource.AllFromAPIServerMetrics(resp.Body)
}

// kmsReadiness reads the verbose /readyz of the API server whose metrics
// are at metricsURL and returns why its KMS checks are not all ok ("" when
// they are). An API server whose plugin fails its health check keeps
// reporting the last key_id in its metrics for a while; only readiness
// says the provider is unhealthy now.
func kmsReadiness(ctx context.Context, hc *http.Client, metricsURL string) string {
	u, err := url.Parse(metricsURL)
	if err != nil {
		return fmt.Sprintf("bad URL: %v", err)
	}
	u.Path, u.RawQuery = "/readyz", "verbose"
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Sprintf("cannot read %s: %v", u.Path, err)
	}
	defer resp.Body.Close()
	// Not ready answers 500 with the same verbose list; anything else
	// (403, 404) says nothing about KMS.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusInternalServerError {
		return fmt.Sprintf("%s answered HTTP %d", u.Path, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Sprintf("read %s: %v", u.Path, err)
	}
	return KMSNotReady(string(body))
}

// KMSNotReady reads a verbose /readyz answer ("[+]name ok" and
// "[-]name failed: ..." lines) and says why its KMS checks are not all
// ok, or "" when at least one is listed and all are ok.
func KMSNotReady(verbose string) string {
	var failed []string
	seen := 0
	for _, line := range strings.Split(verbose, "\n") {
		line = strings.TrimSpace(line)
		if len(line) < 3 || (line[:3] != "[+]" && line[:3] != "[-]") {
			continue
		}
		name, _, _ := strings.Cut(line[3:], " ")
		if !strings.HasPrefix(name, "kms-provider") {
			continue
		}
		seen++
		if line[:3] == "[-]" {
			failed = append(failed, name)
		}
	}
	switch {
	case seen == 0:
		return "/readyz lists no KMS check (kms-providers): is this API server using the plugin?"
	case len(failed) > 0:
		return "/readyz/" + strings.Join(failed, ", /readyz/") + " not ok: the plugin is unhealthy for this API server"
	}
	return ""
}

// Server is one API server's standing for the gate.
type Server struct {
	URL             string    `json:"url"`
	APIServerIDHash string    `json:"apiserverIDHash"`
	OnTarget        bool      `json:"onTarget"`
	Since           time.Time `json:"since,omitempty"`
	LastSeen        time.Time `json:"lastSeen"`
}

// Check decides whether every API server has reported keyID for provider
// for at least settle at now. It fails closed: an unreadable API server, one
// that reports nothing for provider, one on another key_id, one whose last
// report is older than MaxReportAge, or one that switched less than settle
// ago each block the gate, named.
func Check(reports []Report, provider, keyID string, settle time.Duration, now time.Time) ([]Server, error) {
	if len(reports) == 0 {
		return nil, errors.New("no API server to check")
	}
	want := keysource.HashKeyID(keyID)
	var servers []Server
	var problems []string
	for _, r := range reports {
		if r.Err != "" {
			problems = append(problems, fmt.Sprintf("%s: cannot read metrics: %s", r.URL, r.Err))
			continue
		}
		if r.KMSNotReady != "" {
			problems = append(problems, fmt.Sprintf("%s: %s", r.URL, r.KMSNotReady))
			continue
		}
		byServer := map[string][]keysource.APIServerKey{}
		for _, k := range r.Keys {
			if k.Provider == provider {
				byServer[k.APIServerIDHash] = append(byServer[k.APIServerIDHash], k)
			}
		}
		if len(byServer) == 0 {
			problems = append(problems, fmt.Sprintf("%s: reports no key_id for provider %q (is it the right provider name, and does this API server use the plugin?)", r.URL, provider))
			continue
		}
		for id, keys := range byServer {
			s := Server{URL: r.URL, APIServerIDHash: id}
			var newest, other time.Time
			var newestHash string
			for _, k := range keys {
				if k.LastSeen.After(newest) {
					newest, newestHash = k.LastSeen, k.KeyIDHash
				}
				if k.KeyIDHash != want && k.LastSeen.After(other) {
					other = k.LastSeen
				}
			}
			s.LastSeen = newest
			s.OnTarget = newestHash == want
			switch {
			case !s.OnTarget:
				problems = append(problems, fmt.Sprintf("%s (%s): still reports another key_id", r.URL, short(id)))
			case now.Sub(newest) > MaxReportAge:
				problems = append(problems, fmt.Sprintf("%s (%s): last report %s ago, older than %s: its plugin may be failing", r.URL, short(id), now.Sub(newest).Round(time.Second), MaxReportAge))
			default:
				// It switched after it last saw another key_id; with no
				// other key_id in its metrics it never used one since it
				// started.
				s.Since = other
				if !other.IsZero() && now.Sub(other) < settle {
					problems = append(problems, fmt.Sprintf("%s (%s): on the target key_id for %s only, less than the settle time %s", r.URL, short(id), now.Sub(other).Round(time.Second), settle))
				}
			}
			servers = append(servers, s)
		}
	}
	sort.Slice(servers, func(i, j int) bool {
		return servers[i].URL+servers[i].APIServerIDHash < servers[j].URL+servers[j].APIServerIDHash
	})
	if len(problems) > 0 {
		return servers, errors.New(strings.Join(problems, "; "))
	}
	return servers, nil
}

// Same checks that the API servers after a scan are the ones before it, so
// no API server joined (possibly on an older key) while the scan ran.
func Same(before, after []Server) error {
	ids := func(ss []Server) string {
		var out []string
		for _, s := range ss {
			out = append(out, s.APIServerIDHash)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	if ids(before) != ids(after) {
		return fmt.Errorf("the set of API servers changed during the scan (%d before, %d after): run trim again", len(before), len(after))
	}
	return nil
}

func short(h string) string {
	h = strings.TrimPrefix(h, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return "apiserver " + h
}
