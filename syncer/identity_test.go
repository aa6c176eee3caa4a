package syncer

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/vault"
)

func TestTenantTokenSurvivesARefusedPath(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Vault server of make tools")
	}
	// A real Vault: the tenant's token may read secret/data/app only, so
	// secret/data/denied is refused to it as any path outside a policy is.
	v := harness.StartVault(t)
	v.Policy("app-read", `path "secret/data/app" { capabilities = ["read"] }`)
	audit := v.EnableFileAudit()
	lookups := func() int32 { return int32(harness.AuditCountAll(t, audit, "auth/token/lookup-self")) }
	base, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tenants := &Tenants{Base: base, Clock: clocktesting.NewFakeClock(time.Now())}
	var logins atomic.Int32
	// The login stands for the Kubernetes login: Vault makes the token.
	login := func(context.Context, *api.Client) (*api.SecretAuth, error) {
		logins.Add(1)
		sec, err := v.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"app-read"}, TTL: "1h"})
		if err != nil {
			return nil, err
		}
		return sec.Auth, nil
	}
	k := tenantKey{Namespace: "app", ServiceAccount: "app", Role: "app", Mount: "kubernetes"}
	ctx := context.Background()
	tok, err := tenants.ClientFor(ctx, k, login)
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name        string
		revoke      bool
		wantLogins  int32
		wantLookups int32
	}{
		{"a 403 on a data path keeps the token", false, 1, 1},
		{"a 403 on lookup-self drops it", true, 2, 2},
	}
	for _, st := range steps {
		if st.revoke {
			if err := v.Client().Auth().Token().RevokeTree(tok.Client.Token()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tok.Client.Logical().ReadWithContext(ctx, "secret/data/denied/x"); vault.Classify(err) != vault.KindDenied {
			t.Fatalf("%s: the refused read returned %v", st.name, err)
		}
		tenants.Refused(k)
		got, err := tenants.ClientFor(ctx, k, login)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if logins.Load() != st.wantLogins || lookups() != st.wantLookups {
			t.Fatalf("%s: %d logins and %d token checks, want %d and %d", st.name, logins.Load(), lookups(), st.wantLogins, st.wantLookups)
		}
		tok = got
	}
	// A token not refused is reused without any check.
	if _, err := tenants.ClientFor(ctx, k, login); err != nil || logins.Load() != 2 || lookups() != 2 {
		t.Fatalf("a trusted token was checked or replaced: err %v, %d logins, %d checks", err, logins.Load(), lookups())
	}
}

func TestTenantsMintNoTokenForAnAudienceNotAllowed(t *testing.T) {
	kube := fake.NewClientset()
	var minted atomic.Int32
	kube.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "token" {
			minted.Add(1)
		}
		return false, nil, nil
	})
	base, err := vault.NewClient(vault.Config{Address: "http://127.0.0.1:1", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tenants := &Tenants{Base: base, Kube: kube, Audiences: []string{"vault"}, Clock: clocktesting.NewFakeClock(time.Now())}
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "x"}, Spec: v1alpha1.VaultSecretSpec{
		Auth:   v1alpha1.Auth{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app", Audiences: []string{"https://kubernetes.default.svc"}}},
		Source: v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "a"}},
	}}
	if err := tenants.CheckSpec(vs); err == nil || !strings.HasPrefix(err.Error(), "spec.auth.kubernetes.audiences[0]") {
		t.Fatalf("CheckSpec: %v, want an error naming spec.auth.kubernetes.audiences[0]", err)
	}
	// Even a caller that skipped CheckSpec gets no token minted.
	k := tenantKey{Namespace: "app", ServiceAccount: "app", Role: "app", Mount: "kubernetes"}
	if _, err := tenants.Client(context.Background(), k, vs.Spec.Auth.Kubernetes.Audiences); err == nil {
		t.Fatal("Client logged in for an audience not allowed")
	}
	if minted.Load() != 0 {
		t.Fatalf("%d TokenRequests were made for an audience not allowed", minted.Load())
	}
}

// TestVaultIdentityAskedOncePerClientAndBounded: the Vault's identity is
// asked once per base client, not once per login; a sys/health that never
// answers gives no identity (leases then behave as before) instead of
// holding the login for the whole Vault timeout.
func TestVaultIdentityAskedOncePerClientAndBounded(t *testing.T) {
	var asked atomic.Int32
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/sys/health" {
			http.NotFound(w, r)
			return
		}
		if asked.Add(1) > 2 {
			<-hang // black-holed from the third request on
			return
		}
		_, _ = w.Write([]byte(`{"cluster_id":"c-1","initialized":true}`))
	}))
	defer srv.Close()
	defer close(hang) // before Close, which waits for the hanging request
	client := func() *api.Client {
		cfg := api.DefaultConfig()
		cfg.Address, cfg.Timeout = srv.URL, time.Minute
		c, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tn := &Tenants{}
	base := client()
	for range 3 {
		if id := tn.vaultOf(t.Context(), base, base); id != "c-1" {
			t.Fatalf("identity %q, want c-1", id)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("sys/health asked %d times for one client, want 1", n)
	}
	ns := client()
	ns.SetNamespace("team-a/")
	if id := tn.vaultOf(t.Context(), ns, ns); id != "c-1/team-a" {
		t.Fatalf("identity %q, want c-1/team-a", id)
	}
	done := make(chan string, 1)
	go func() { done <- vaultIdentity(t.Context(), client()) }()
	select {
	case id := <-done:
		if id != "" {
			t.Fatalf("identity %q from a black-holed sys/health", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a black-holed sys/health held the login past 30 s (the client's timeout is a minute)")
	}
}
