package apiservers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/vaultkms/vaultkms/verifier/keysource"
)

func TestCheck(t *testing.T) {
	now := time.Unix(10000, 0)
	oldH, newH := keysource.HashKeyID("old"), keysource.HashKeyID("new")
	k := func(id, hash string, ago time.Duration) keysource.APIServerKey {
		return keysource.APIServerKey{APIServerIDHash: id, Provider: "vault", KeyIDHash: hash, LastSeen: now.Add(-ago)}
	}
	settled := Report{URL: "a", Keys: []keysource.APIServerKey{k("A", oldH, 5*time.Minute), k("A", newH, 10*time.Second)}}
	fresh := Report{URL: "b", Keys: []keysource.APIServerKey{k("B", newH, 20*time.Second)}}
	cases := []struct {
		name    string
		reports []Report
		problem string
	}{
		{"all settled", []Report{settled, fresh}, ""},
		{"none", nil, "no API server"},
		{"unreadable", []Report{settled, {URL: "c", Err: "connection refused"}}, "c: cannot read metrics"},
		{"other provider only", []Report{{URL: "d", Keys: []keysource.APIServerKey{{APIServerIDHash: "D", Provider: "aws", KeyIDHash: newH, LastSeen: now}}}}, "no key_id for provider"},
		{"behind", []Report{settled, {URL: "e", Keys: []keysource.APIServerKey{k("E", oldH, time.Second), k("E", newH, time.Hour)}}}, "still reports another"},
		{"switched too recently", []Report{{URL: "f", Keys: []keysource.APIServerKey{k("F", oldH, 30*time.Second), k("F", newH, time.Second)}}}, "less than the settle time"},
		{"kms not ready", []Report{settled, {URL: "h", Keys: fresh.Keys, KMSNotReady: "/readyz/kms-providers not ok"}}, "h: /readyz/kms-providers not ok"},
		{"report too old", []Report{{URL: "g", Keys: []keysource.APIServerKey{k("G", newH, 10*time.Minute)}}}, "plugin may be failing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.reports, "vault", "new", 2*time.Minute, now)
			if tc.problem == "" && err != nil {
				t.Fatalf("Check = %v, want pass", err)
			}
			if tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)) {
				t.Fatalf("Check = %v, want a problem naming %q", err, tc.problem)
			}
		})
	}
}

func TestSame(t *testing.T) {
	a := []Server{{APIServerIDHash: "A"}, {APIServerIDHash: "B"}}
	if err := Same(a, []Server{{APIServerIDHash: "B"}, {APIServerIDHash: "A"}}); err != nil {
		t.Fatal(err)
	}
	if err := Same(a, append(a, Server{APIServerIDHash: "C"})); err == nil {
		t.Fatal("a new API server during the scan went unnoticed")
	}
}

func TestKMSNotReady(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"ok", "[+]ping ok\n[+]etcd ok\n[+]kms-providers ok\nreadyz check passed\n", ""},
		{"without automatic reload", "[+]kms-provider-0 ok\n[+]kms-provider-1 ok\n", ""},
		{"failed", "[+]etcd ok\n[-]kms-providers failed: reason withheld\nreadyz check failed\n", "/readyz/kms-providers not ok"},
		{"one of two failed", "[+]kms-provider-0 ok\n[-]kms-provider-1 failed: reason withheld\n", "/readyz/kms-provider-1 not ok"},
		{"no kms check", "[+]ping ok\n[+]etcd ok\n", "lists no KMS check"},
		{"empty", "", "lists no KMS check"},
	}
	for _, tc := range cases {
		got := KMSNotReady(tc.body)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: KMSNotReady = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Fetch reads /readyz?verbose beside each /metrics: an API server whose
// KMS check fails blocks the gate even while its metrics show the target
// key_id.
func TestFetchReadsKMSReadiness(t *testing.T) {
	newH := keysource.HashKeyID("new")
	ready := "[+]kms-providers ok\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			fmt.Fprint(w, "# TYPE apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds gauge\n")
			fmt.Fprintf(w, "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash=\"sha256:a\",key_id_hash=%q,provider_name=\"vault\"} %d\n", newH, time.Now().Unix())
		case "/readyz":
			if !strings.HasPrefix(ready, "[+]") {
				w.WriteHeader(http.StatusInternalServerError)
			}
			fmt.Fprint(w, ready)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL}
	for _, tc := range []struct {
		readyz string
		pass   bool
	}{{"[+]kms-providers ok\n", true}, {"[-]kms-providers failed: reason withheld\n", false}} {
		ready = tc.readyz
		reports, err := Fetch(context.Background(), cfg, []string{srv.URL + "/metrics"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Check(reports, "vault", "new", MinSettle, time.Now())
		if (err == nil) != tc.pass {
			t.Fatalf("readyz %q: Check = %v, want pass=%v", tc.readyz, err, tc.pass)
		}
	}
}

func TestCheckSettle(t *testing.T) {
	if err := CheckSettle("--settle-time", 3*time.Minute+59*time.Second); err == nil || !strings.Contains(err.Error(), "--settle-time") || !strings.Contains(err.Error(), "at least 4m0s") {
		t.Fatalf("CheckSettle(3m59s) = %v, want a refusal naming the flag and the minimum", err)
	}
	if err := CheckSettle("--settle-time", MinSettle); err != nil {
		t.Fatal(err)
	}
}

func TestCheckTimeout(t *testing.T) {
	// The defaults (5m settle, 15m timeout) and the tightest timeout pass;
	// a minute less, or a timeout just above the settle time (which the
	// CRD used to accept), is refused naming the field and the minimum.
	if err := CheckTimeout("spec.apiServers.timeout", 15*time.Minute, DefaultSettle); err != nil {
		t.Fatal(err)
	}
	if err := CheckTimeout("spec.apiServers.timeout", DefaultSettle+FirstReport, DefaultSettle); err != nil {
		t.Fatal(err)
	}
	for _, timeout := range []time.Duration{DefaultSettle + FirstReport - time.Second, DefaultSettle + time.Second, 90 * time.Second} {
		err := CheckTimeout("spec.apiServers.timeout", timeout, DefaultSettle)
		if err == nil || !strings.Contains(err.Error(), "spec.apiServers.timeout") || !strings.Contains(err.Error(), "at least 7m0s") {
			t.Fatalf("CheckTimeout(%s, 5m) = %v, want a refusal naming the field and 7m", timeout, err)
		}
	}
}
