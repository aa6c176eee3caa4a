package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/syncer"
)

// hangingProxy is a reverse proxy in front of the real Vault that holds
// every request for one path prefix without answering, until released or
// until the caller gives up: a tenant whose Vault path hangs. It counts the
// requests it holds at once.
type hangingProxy struct {
	srv    *httptest.Server
	prefix string

	mu       sync.Mutex
	released chan struct{}
	held     int
	peak     int
	total    int
}

// startHangingProxy serves plain HTTP on loopback (which the controller
// accepts for --vault-addr) and forwards to v over TLS.
func startHangingProxy(t *testing.T, v *harness.Vault, prefix string) *hangingProxy {
	t.Helper()
	target, err := url.Parse(v.Addr)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(v.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("Vault's CA: no certificate")
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	p := &hangingProxy{prefix: prefix, released: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, p.prefix) && !p.hold(r) {
			return // the caller gave up (its request timeout, or it stopped)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		p.release()
		p.srv.Close()
	})
	return p
}

// hold waits until released (true) or the caller goes (false).
func (p *hangingProxy) hold(r *http.Request) bool {
	p.mu.Lock()
	p.held++
	p.total++
	p.peak = max(p.peak, p.held)
	released := p.released
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.held--
		p.mu.Unlock()
	}()
	select {
	case <-released:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (p *hangingProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.released:
	default:
		close(p.released)
	}
}

func (p *hangingProxy) counts() (held, peak, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held, p.peak, p.total
}

// TestVaultSecretHangingTenantHoldsOneWorker: the reads of namespace app
// hang in Vault (a proxy holds them; the request timeout is far longer
// than the test), and app has more VaultSecrets than the controller has
// workers. Namespace other is still served: its VaultSecret becomes Ready
// while app's reads hang, and at no time does Vault see more of app's
// reads in flight than the one slot a namespace gets of 4 workers. When
// app's path answers again, every one of its VaultSecrets becomes Ready.
func TestVaultSecretHangingTenantHoldsOneWorker(t *testing.T) {
	t.Parallel()
	const workers, hanging = 4, 6
	var proxy *hangingProxy
	s := startSyncerStack(t, stackOptions{
		vaultAddr: func(v *harness.Vault) string {
			proxy = startHangingProxy(t, v, "/v1/secret/data/hang/")
			return proxy.srv.URL
		},
		args: []string{fmt.Sprintf("--max-concurrent-reconciles=%d", workers), "--vault-request-timeout=10m"},
	})
	s.v.Policy("hang-read", `path "secret/data/hang/*" { capabilities = ["read"] }`)
	s.v.Policy("ok-read", `path "secret/data/ok/*" { capabilities = ["read"] }`)
	s.role("hang", "app", "hang-read", nil)
	s.role("ok", "other", "ok-read", nil)
	s.v.Write("secret/data/hang/config", map[string]any{"data": map[string]any{"k": "hang-value"}})
	s.v.Write("secret/data/ok/config", map[string]any{"data": map[string]any{"k": "ok-value"}})

	for i := range hanging {
		if _, err := s.apply(t, fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: hang-%d, namespace: app}
spec:
  auth: {kubernetes: {role: hang, serviceAccountName: app}}
  source: {kv: {mount: secret, path: hang/config}}
  ttl: 10m
`, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until app's VaultSecrets have all been tried: some reads hang,
	// the others found the namespace's slots taken.
	deadline := time.Now().Add(60 * time.Second)
	for {
		held, _, _ := proxy.counts()
		throttled := map[string]bool{}
		for _, line := range strings.Split(s.log.String(), "\n") {
			if strings.Contains(line, "namespace at its limit of passes calling Vault") {
				for i := range hanging {
					if strings.Contains(line, fmt.Sprintf(`"name":"hang-%d","namespace":"app"`, i)) {
						throttled[fmt.Sprint(i)] = true
					}
				}
			}
		}
		// A namespace not yet known to be slow may use all workers but
		// one (syncer.NamespaceBurst); the rest are throttled.
		if held >= 1 && len(throttled) >= hanging-syncer.NamespaceBurst(workers) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s %d of app's reads hang and %d VaultSecrets were throttled, want at least 1 and %d\ncontroller log:\n%s", held, len(throttled), hanging-syncer.NamespaceBurst(workers), s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: ok, namespace: other}
spec:
  auth: {kubernetes: {role: ok, serviceAccountName: app}}
  source: {kv: {mount: secret, path: ok/config}}
  ttl: 10m
`); err != nil {
		t.Fatal(err)
	}
	// Without the limit, app's six VaultSecrets take all four workers for
	// the 10 min request timeout and this waits in the queue behind them;
	// with it, one worker is always left to other namespaces.
	s.waitReady(t, "other", "ok", metav1.ConditionTrue, "Synced", 60*time.Second)
	s.waitSecret(t, "other", "ok", 10*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["k"]) == "ok-value" })
	held, peak, total := proxy.counts()
	t.Logf("while other synced: %d of app's reads held, at most %d at once, %d in all", held, peak, total)
	if held == 0 {
		t.Fatal("app's reads no longer hang: the test did not test the hang")
	}
	if peak > syncer.NamespaceBurst(workers) {
		t.Fatalf("%d of app's reads in flight at once; a namespace gets at most %d of %d workers", peak, syncer.NamespaceBurst(workers), workers)
	}

	// app's path answers again: the held read goes through and the
	// throttled VaultSecrets get their turns.
	proxy.release()
	for i := range hanging {
		name := fmt.Sprintf("hang-%d", i)
		s.waitReady(t, "app", name, metav1.ConditionTrue, "Synced", 60*time.Second)
		s.waitSecret(t, "app", name, 10*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["k"]) == "hang-value" })
	}
}
