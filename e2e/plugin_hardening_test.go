package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/kmsplugin"
)

// These tests run the in-process plugin against a real Vault; each one
// fails on the code before issue 8 and passes after.

// TestVaultEnvironmentIsIgnored: no VAULT_* variable changes what the
// client does. It cannot run in parallel because it sets the environment.
func TestVaultEnvironmentIsIgnored(t *testing.T) {
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	dead, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_CACERT", v.CA.CertFile)
	t.Setenv("VAULT_TOKEN", v.RootToken)
	t.Setenv("VAULT_NAMESPACE", "elsewhere")

	t.Run("untrusted certificate is refused despite VAULT_SKIP_VERIFY", func(t *testing.T) {
		other, err := harness.NewCA(t.TempDir(), "not-vaults-ca")
		if err != nil {
			t.Fatal(err)
		}
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, CACert: other.CertFile, RefreshInterval: 200 * time.Millisecond})
		time.Sleep(3 * time.Second)
		if id := p.Plugin.CurrentKeyID(); id != "" {
			t.Fatalf("the plugin read the key through a certificate it must not trust (key_id %q)", id)
		}
		st := p.Session.State()
		if st.Valid || !strings.Contains(st.Reason, "certificate") {
			t.Fatalf("token state %+v: want a login refused for the certificate", st)
		}
	})

	t.Run("VAULT_AGENT_ADDR does not replace the address", func(t *testing.T) {
		t.Setenv("VAULT_AGENT_ADDR", fmt.Sprintf("http://127.0.0.1:%d", dead))
		t.Setenv("VAULT_ADDR", fmt.Sprintf("http://127.0.0.1:%d", dead))
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key})
		p.WaitKeyID(t, 20*time.Second)
		roundTrip(t, p.Client(t), "env")
	})
}

// TestKeyIDDoesNotDriftWithSpelling: "/transit/" and "transit" are one
// mount, so they give one key_id, and a key_id recorded with either
// spelling decrypts.
func TestKeyIDDoesNotDriftWithSpelling(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	slashed := harness.StartPlugin(t, v, harness.PluginOptions{Mount: "/transit/", Key: key})
	plain := harness.StartPlugin(t, v, harness.PluginOptions{Mount: "transit", Key: key})
	a, b := slashed.WaitKeyID(t, 20*time.Second), plain.WaitKeyID(t, 20*time.Second)
	if a != b {
		t.Fatalf("key_id depends on how the mount is spelled: %q vs %q", a, b)
	}
	ctx := context.Background()
	enc, err := slashed.Client(t).Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")})
	if err != nil {
		t.Fatal(err)
	}
	// A key_id stored by a plugin that recorded the mount as typed.
	old, err := transitkey.ParseKeyID(enc.KeyId)
	if err != nil {
		t.Fatal(err)
	}
	old.Mount = "transit/"
	for _, id := range []string{enc.KeyId, old.String()} {
		dec, err := plain.Client(t).Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: id})
		if err != nil || string(dec.Plaintext) != "seed" {
			t.Fatalf("Decrypt with stored key_id %q: %v", id, err)
		}
	}
}

// loginWindow is how long the storm tests count logins; the bound is
// vault.LoginBound for it.
const loginWindow = 20 * time.Second

// TestLoginsCannotStorm counts logins in Vault's own audit log over a
// window in which the token cannot be kept, and checks the documented
// bound; replaced tokens are revoked.
func TestLoginsCannotStorm(t *testing.T) {
	t.Parallel()
	bound := vault.LoginBound(loginWindow, vault.DefaultBackoff)
	cases := []struct {
		name string
		// role settings, and a setup run before the plugin starts
		ttl, maxTTL string
		noDefault   bool
		setup       func(v *harness.Vault)
		maxLogins   int
	}{
		{name: "renewal refused by a rate-limit quota (429)", ttl: "4s", setup: func(v *harness.Vault) {
			v.Write("sys/quotas/rate-limit/renew", map[string]any{"path": "auth/token/renew-self", "rate": 1, "interval": "1h"})
			// Use up the one allowed renewal.
			tok := v.Write("auth/token/create", map[string]any{"ttl": "1h"}).Auth.ClientToken
			c := v.Client()
			c.SetToken(tok)
			c.Auth().Token().RenewSelf(0)
		}, maxLogins: bound},
		{name: "token lifetime of one second", ttl: "1s", maxTTL: "1s", maxLogins: bound},
		// Pinned: a token without renew-self is used until shortly
		// before it expires, so one login in the window.
		{name: "no renew-self permission", ttl: "1h", noDefault: true, maxLogins: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := harness.StartVault(t)
			v.TransitKey(mount, key)
			pluginPolicy(v)
			audit := v.EnableFileAudit()
			if tc.setup != nil {
				tc.setup(v)
			}
			m := appRoleRole(t, v, "approle", map[string]any{"token_ttl": tc.ttl, "token_max_ttl": tc.maxTTL, "token_no_default_policy": tc.noDefault})
			p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: m, RefreshInterval: time.Second})
			p.WaitKeyID(t, 20*time.Second)
			time.Sleep(loginWindow)
			logins := harness.AuditCount(t, audit, "auth/approle/login")
			t.Logf("%d logins in %s (bound %d)", logins, loginWindow, tc.maxLogins)
			if logins > tc.maxLogins {
				t.Fatalf("%d logins in %s; the documented bound is %d\n%s", logins, loginWindow, tc.maxLogins, tail(p.Log.String()))
			}
			if live := liveRoleTokens(t, v, "kms"); live > 2 {
				t.Fatalf("%d tokens of the role are alive after %d logins: replaced tokens must be revoked", live, logins)
			}
		})
	}
}

// TestPathDeniedCostsNoLogin: a 403 for a path the policy does not allow
// never makes the plugin log in, however many calls meet it; a revoked
// token is replaced once, however many calls meet it at the same time.
func TestPathDeniedCostsNoLogin(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	// Encrypt and read, but no decrypt: every Encrypt is refused at its
	// proof (a decrypt of what it wrapped) and every Decrypt outright.
	v.Policy("kms-plugin", fmt.Sprintf(`path "%[1]s/keys/%[2]s" { capabilities = ["read"] }
path "%[1]s/encrypt/%[2]s" { capabilities = ["update"] }
`, mount, key))
	audit := v.EnableFileAudit()
	m := appRoleRole(t, v, "approle", map[string]any{"token_ttl": "1h"})
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: m})
	keyID := p.WaitKeyID(t, 20*time.Second)
	c := p.Client(t)
	ctx := context.Background()
	wrapped := v.Write(mount+"/encrypt/"+key, map[string]any{"plaintext": "c2VlZA=="})
	ct, _ := wrapped.Data["ciphertext"].(string)
	for i := range 30 {
		_, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: []byte(ct), KeyId: keyID})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Decrypt %d: %v, want PermissionDenied", i, err)
		}
		if _, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Encrypt %d, unprovable without decrypt: %v, want PermissionDenied", i, err)
		}
	}
	if n := harness.AuditCount(t, audit, "auth/approle/login"); n != 1 {
		t.Fatalf("%d logins for 60 calls refused by policy; want 1 (the first)\n%s", n, tail(p.Log.String()))
	}
	// Decrypt allowed from now on (policies apply to live tokens).
	v.Policy("kms-plugin", fmt.Sprintf(`path "%[1]s/keys/%[2]s" { capabilities = ["read"] }
path "%[1]s/encrypt/%[2]s" { capabilities = ["update"] }
path "%[1]s/decrypt/%[2]s" { capabilities = ["update"] }
`, mount, key))

	// Revoke the token under 20 concurrent calls: one re-login.
	if err := v.Client().Auth().Token().RevokeTree(p.Session.Token()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := c.Encrypt(cctx, &kmsapi.EncryptRequest{Plaintext: []byte("x")}); err != nil {
				failed.Add(1)
				t.Logf("Encrypt after revocation: %v", err)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d calls failed across the re-login", failed.Load())
	}
	if n := harness.AuditCount(t, audit, "auth/approle/login"); n != 2 {
		t.Fatalf("%d logins after one revocation under 20 concurrent calls; want 2", n)
	}
}

// TestCredentialFilesRotate: a new Vault CA and a new client certificate
// are picked up from their files without a restart.
func TestCredentialFilesRotate(t *testing.T) {
	t.Parallel()
	t.Run("vault CA", func(t *testing.T) {
		t.Parallel()
		v := harness.StartVault(t)
		v.TransitKey(mount, key)
		caFile := filepath.Join(t.TempDir(), "ca.crt")
		replaceFile(t, caFile, v.CA.CertPEM)
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, CACert: caFile, FileCheckInterval: 100 * time.Millisecond})
		p.WaitKeyID(t, 20*time.Second)
		c := p.Client(t)
		roundTrip(t, c, "before")
		newCA := v.ServeCert()
		replaceFile(t, caFile, newCA.CertPEM)
		eventually(t, 15*time.Second, func() error { return tryRoundTrip(c) })
		roundTrip(t, c, "after")
	})
	t.Run("client certificate", func(t *testing.T) {
		t.Parallel()
		v := harness.StartVault(t)
		v.TransitKey(mount, key)
		pluginPolicy(v)
		v.EnableAuth("cert", "cert")
		dir := t.TempDir()
		ca1, err := harness.NewCA(filepath.Join(dir), "clients1")
		if err != nil {
			t.Fatal(err)
		}
		d1, d2 := filepath.Join(dir, "1"), filepath.Join(dir, "2")
		os.Mkdir(d1, 0o700)
		os.Mkdir(d2, 0o700)
		crt1, key1, err := ca1.Issue(d1, "kms-plugin", false)
		if err != nil {
			t.Fatal(err)
		}
		crt, keyf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		copyFile(t, crt1, crt)
		copyFile(t, key1, keyf)
		v.Write("auth/cert/certs/kms", map[string]any{"certificate": string(ca1.CertPEM), "token_policies": "kms-plugin", "token_ttl": "1h"})
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: vault.Cert{Role: "kms"}, ClientCert: crt, ClientKey: keyf, FileCheckInterval: 100 * time.Millisecond})
		p.WaitKeyID(t, 20*time.Second)
		c := p.Client(t)
		roundTrip(t, c, "before")
		// A new certificate from a new CA; Vault trusts only the new CA.
		ca2, err := harness.NewCA(dir, "clients2")
		if err != nil {
			t.Fatal(err)
		}
		crt2, key2, err := ca2.Issue(d2, "kms-plugin", false)
		if err != nil {
			t.Fatal(err)
		}
		copyFile(t, crt2, crt)
		copyFile(t, key2, keyf)
		v.Write("auth/cert/certs/kms", map[string]any{"certificate": string(ca2.CertPEM), "token_policies": "kms-plugin", "token_ttl": "1h"})
		time.Sleep(300 * time.Millisecond)
		// The old token goes; the next login must present the new certificate.
		if err := v.Client().Auth().Token().RevokeTree(p.Session.Token()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, func() error { return tryRoundTrip(c) })
	})
}

// TestSeveralVaultAddresses: the first address is dead, the second works
// until it goes away mid-run, the third takes over; no call fails.
func TestSeveralVaultAddresses(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	dead, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	target := strings.TrimPrefix(v.Addr, "https://")
	a, b := startTCPForwarder(t, target), startTCPForwarder(t, target)
	addrs := fmt.Sprintf("https://127.0.0.1:%d,https://%s, https://%s", dead, a.addr, b.addr)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Addr: addrs, RefreshInterval: 300 * time.Millisecond})
	p.WaitKeyID(t, 20*time.Second)
	c := p.Client(t)
	for i := range 5 {
		roundTrip(t, c, fmt.Sprintf("a%d", i))
	}
	if a.conns.Load() == 0 || b.conns.Load() != 0 {
		t.Fatalf("connections: second address %d, third %d; want all on the second", a.conns.Load(), b.conns.Load())
	}
	a.close()
	for i := range 10 {
		roundTrip(t, c, fmt.Sprintf("b%d", i))
	}
	if b.conns.Load() == 0 {
		t.Fatal("the third address was never used after the second went away")
	}
}

// TestEdges covers the small contracts of item 6, each against a real Vault.
func TestEdges(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	ctx := context.Background()

	t.Run("412 is retried", func(t *testing.T) {
		var refused atomic.Int32
		proxy := startTLSProxy(t, v, func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/encrypt/") && refused.Add(1) == 1 {
				w.WriteHeader(http.StatusPreconditionFailed)
				io.WriteString(w, `{"errors":["required index state not present"]}`)
				return true
			}
			return false
		})
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Addr: proxy})
		p.WaitKeyID(t, 20*time.Second)
		roundTrip(t, p.Client(t), "412")
		if refused.Load() < 2 {
			t.Fatal("the proxy never answered 412")
		}
	})

	t.Run("status is not ok while every encrypt fails item by item", func(t *testing.T) {
		// A derived key needs a context for every item: Vault answers,
		// and rejects each item.
		v.Write(mount+"/keys/derived", map[string]any{"derived": true})
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: "derived", RefreshInterval: 200 * time.Millisecond})
		p.WaitKeyID(t, 20*time.Second)
		c := p.Client(t)
		if _, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("x")}); err == nil {
			t.Fatal("encrypt with a derived key and no context succeeded")
		}
		time.Sleep(500 * time.Millisecond) // a refresh or two; they succeed
		st, err := c.Status(ctx, &kmsapi.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Healthz == "ok" {
			t.Fatal("Status says ok while no seed can be wrapped")
		}
	})

	t.Run("a token file changed during the login is not missed", func(t *testing.T) {
		tokA := v.Write("auth/token/create", map[string]any{"ttl": "1h"}).Auth.ClientToken
		tokB := v.Write("auth/token/create", map[string]any{"ttl": "1h"}).Auth.ClientToken
		file := harness.TokenFile(t, tokA)
		m := &rewriteAfterLogin{TokenFile: vault.TokenFile{Path: file}, then: tokB}
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: m, FilePoll: 100 * time.Millisecond})
		p.WaitKeyID(t, 20*time.Second)
		eventually(t, 5*time.Second, func() error {
			if p.Session.Token() != tokB {
				return errors.New("still on the token the file held before the change")
			}
			return nil
		})
	})

	t.Run("key_id and ciphertext limits", func(t *testing.T) {
		// The namespace is recorded in key_id only (this Vault has none):
		// a long one makes a key_id longer than kube-apiserver allows.
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Namespace: strings.Repeat("n", 1100), RefreshInterval: 200 * time.Millisecond})
		time.Sleep(time.Second)
		if id := p.Plugin.CurrentKeyID(); id != "" {
			t.Fatalf("reported a %d-byte key_id; kube-apiserver allows 1024", len(id))
		}
		if h := p.Plugin.Health(); !strings.Contains(h, "1024") {
			t.Fatalf("health %q does not name the limit", h)
		}
		q := harness.StartPlugin(t, v, harness.PluginOptions{Key: key})
		id := q.WaitKeyID(t, 20*time.Second)
		_, err := q.Client(t).Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: []byte("vault:v1:" + strings.Repeat("A", 1100)), KeyId: id})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "1024") {
			t.Fatalf("Decrypt of an over-long ciphertext: %v", err)
		}
	})

	t.Run("changed associated data is named", func(t *testing.T) {
		a := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, AssociatedData: []byte("cluster-a")})
		b := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, AssociatedData: []byte("cluster-b")})
		a.WaitKeyID(t, 20*time.Second)
		b.WaitKeyID(t, 20*time.Second)
		enc, err := a.Client(t).Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")})
		if err != nil {
			t.Fatal(err)
		}
		if len(enc.Annotations[kmsplugin.AssociatedDataAnnotation]) == 0 || strings.Contains(string(enc.Annotations[kmsplugin.AssociatedDataAnnotation]), "cluster-a") {
			t.Fatalf("annotations %q: want a hash of the associated data", enc.Annotations)
		}
		_, err = b.Client(t).Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--associated-data") {
			t.Fatalf("Decrypt with other associated data: %v; want FailedPrecondition naming --associated-data", err)
		}
		// A seed wrapped before the flag was set: named the same way, not
		// an authentication failure from Vault (InvalidArgument, before).
		none := harness.StartPlugin(t, v, harness.PluginOptions{Key: key})
		none.WaitKeyID(t, 20*time.Second)
		plain, err := none.Client(t).Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")})
		if err != nil {
			t.Fatal(err)
		}
		if len(plain.Annotations) != 0 {
			t.Fatalf("annotations %q without --associated-data", plain.Annotations)
		}
		_, err = b.Client(t).Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: plain.Ciphertext, KeyId: plain.KeyId})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "without --associated-data") {
			t.Fatalf("Decrypt of a seed wrapped without associated data, by a plugin with it: %v; want FailedPrecondition naming --associated-data", err)
		}
	})

	t.Run("no stale key_id after the key is recreated", func(t *testing.T) {
		v.Write(mount+"/keys/recreated", map[string]any{"type": "aes256-gcm96"})
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: "recreated", RefreshInterval: time.Hour})
		p.WaitKeyID(t, 20*time.Second)
		c := p.Client(t)
		first, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // creation times are in seconds
		v.Write(mount+"/keys/recreated/config", map[string]any{"deletion_allowed": true})
		if _, err := v.Client().Logical().Delete(mount + "/keys/recreated"); err != nil {
			t.Fatal(err)
		}
		v.Write(mount+"/keys/recreated", map[string]any{"type": "aes256-gcm96"})
		ki, err := transitkey.Read(ctx, v.Client(), mount, "recreated")
		if err != nil {
			t.Fatal(err)
		}
		var got *kmsapi.EncryptResponse
		eventually(t, 10*time.Second, func() error {
			got, err = c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("y")})
			return err
		})
		if got.KeyId == first.KeyId {
			t.Fatalf("a seed wrapped by the recreated key carries the old key_id %q", got.KeyId)
		}
		if k, _ := transitkey.ParseKeyID(got.KeyId); !k.Created.Equal(ki.Created[1]) {
			t.Fatalf("key_id %q does not name the recreated key (created %s)", got.KeyId, ki.Created[1])
		}
	})

	t.Run("overload answers ResourceExhausted", func(t *testing.T) {
		w := harness.StartVault(t)
		w.TransitKey(mount, key)
		p := harness.StartPlugin(t, w, harness.PluginOptions{Key: key, MaxInFlight: 1, MaxQueue: 2})
		p.WaitKeyID(t, 20*time.Second)
		c := p.Client(t)
		w.Pause()
		t.Cleanup(w.Resume)
		var wg sync.WaitGroup
		var exhausted atomic.Int32
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err := c.Encrypt(cctx, &kmsapi.EncryptRequest{Plaintext: []byte("x")})
				if status.Code(err) == codes.ResourceExhausted {
					exhausted.Add(1)
				}
			}()
		}
		wg.Wait()
		w.Resume()
		if exhausted.Load() == 0 {
			t.Fatal("10 calls against a hung Vault with room for 3: none was told ResourceExhausted")
		}
	})

	t.Run("errors to the API server carry no Vault address", func(t *testing.T) {
		w := harness.StartVault(t)
		w.TransitKey(mount, key)
		p := harness.StartPlugin(t, w, harness.PluginOptions{Key: key})
		p.WaitKeyID(t, 20*time.Second)
		w.Stop()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := p.Client(t).Encrypt(cctx, &kmsapi.EncryptRequest{Plaintext: []byte("x")})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Encrypt with Vault down: %v", err)
		}
		host := strings.TrimPrefix(w.Addr, "https://")
		if strings.Contains(err.Error(), host) || strings.Contains(err.Error(), "/v1/") {
			t.Fatalf("error to the API server names Vault's address: %v", err)
		}
	})
}

// TestLoginErrorKeepsItsKind: a Vault that is down at login is
// "unavailable" however the error is wrapped on the way (the controller
// turned it into AuthFailed), and its text names no address.
func TestLoginErrorKeepsItsKind(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	m := appRoleRole(t, v, "approle", map[string]any{"token_ttl": "1h"})
	c, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v.Stop()
	_, err = m.Login(context.Background(), c)
	wrapped := fmt.Errorf("vault login as ns/sa with role %q: %w", "r", err)
	if k := vault.Classify(wrapped); k != vault.KindUnavailable {
		t.Fatalf("Classify = %s, want unavailable: %v", k, wrapped)
	}
	var ve *vault.Error
	if !errors.As(wrapped, &ve) {
		t.Fatalf("no typed vault error in %v", wrapped)
	}
	if d := vault.Describe(wrapped); strings.Contains(d, strings.TrimPrefix(v.Addr, "https://")) || !strings.Contains(d, "vault login as ns/sa") {
		t.Fatalf("Describe = %q", d)
	}
}

// rewriteAfterLogin replaces the token file right after each login has
// read it: the window in which a fingerprint taken after the login would
// miss the change.
type rewriteAfterLogin struct {
	vault.TokenFile
	then string
	done atomic.Bool
}

func (m *rewriteAfterLogin) Login(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
	auth, err := m.TokenFile.Login(ctx, c)
	if err == nil && m.done.CompareAndSwap(false, true) {
		os.WriteFile(m.Path+".new", []byte(m.then), 0o600)
		os.Rename(m.Path+".new", m.Path)
	}
	return auth, err
}

// appRoleRole creates AppRole role kms at the mount with the given token
// settings and the plugin's policy, and returns the method.
func appRoleRole(t *testing.T, v *harness.Vault, mountPath string, settings map[string]any) vault.AppRole {
	t.Helper()
	if auths, err := v.Client().Sys().ListAuth(); err != nil {
		t.Fatal(err)
	} else if _, ok := auths[mountPath+"/"]; !ok {
		v.EnableAuth(mountPath, "approle")
	}
	role := map[string]any{"token_policies": "kms-plugin"}
	for k, val := range settings {
		if s, ok := val.(string); ok && s == "" {
			continue
		}
		role[k] = val
	}
	v.Write("auth/"+mountPath+"/role/kms", role)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "role-id"), v.Read("auth/" + mountPath + "/role/kms/role-id").Data["role_id"].(string))
	write(t, filepath.Join(dir, "secret-id"), v.Write("auth/"+mountPath+"/role/kms/secret-id", nil).Data["secret_id"].(string))
	return vault.AppRole{Mount: mountPath, RoleIDFile: filepath.Join(dir, "role-id"), SecretIDFile: filepath.Join(dir, "secret-id")}
}

// liveRoleTokens counts the unexpired tokens AppRole role issued.
func liveRoleTokens(t *testing.T, v *harness.Vault, role string) int {
	t.Helper()
	s, err := v.Client().Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := s.Data["keys"].([]any)
	n := 0
	for _, k := range keys {
		info, err := v.Client().Auth().Token().LookupAccessor(k.(string))
		if err != nil || info == nil {
			continue
		}
		meta, _ := info.Data["meta"].(map[string]any)
		if meta["role_name"] == role {
			n++
		}
	}
	return n
}

func tryRoundTrip(c kmsapi.KeyManagementServiceClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	enc, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("probe")})
	if err != nil {
		return err
	}
	_, err = c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId})
	return err
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replaceFile writes content next to path and renames it into place, the
// way cert-manager's and Vault Agent's writers do.
func replaceFile(t *testing.T, path string, content []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, to, b)
}

func tail(s string) string {
	if len(s) > 4000 {
		return "...\n" + s[len(s)-4000:]
	}
	return s
}

// tcpForwarder relays TCP connections to a real Vault, so an address can
// go away (close) while Vault stays up.
type tcpForwarder struct {
	addr  string
	lis   net.Listener
	conns atomic.Int32
	mu    sync.Mutex
	open  []net.Conn
}

func startTCPForwarder(t *testing.T, target string) *tcpForwarder {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &tcpForwarder{addr: lis.Addr().String(), lis: lis}
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			f.conns.Add(1)
			f.mu.Lock()
			f.open = append(f.open, in, out)
			f.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(f.close)
	return f
}

// close stops listening and cuts every relayed connection.
func (f *tcpForwarder) close() {
	f.lis.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.open {
		c.Close()
	}
	f.open = nil
}

// startTLSProxy serves HTTPS with a certificate of Vault's CA and relays
// to Vault, unless intercept answers the request itself.
func startTLSProxy(t *testing.T, v *harness.Vault, intercept func(http.ResponseWriter, *http.Request) bool) string {
	t.Helper()
	dir := t.TempDir()
	crt, k, err := v.CA.Issue(dir, "proxy", true)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(crt, k)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(v.CA.CertPEM)
	target, _ := url.Parse(v.Addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}
