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
	"github.com/vaultkms/vaultkms/internal/vault"
)

// refusingVault is a deliberately partial Vault: it refuses one data path
// to every token, and accepts lookup-self while the token is not revoked.
type refusingVault struct {
	revoked atomic.Bool
	lookups atomic.Int32
}

func (v *refusingVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/v1/auth/token/lookup-self":
		v.lookups.Add(1)
		if v.revoked.Load() || r.Header.Get("X-Vault-Token") != "tenant-token" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errors":["permission denied"]}`))
			return
		}
		_, _ = w.Write([]byte(`{"data":{"ttl":3600}}`))
	case strings.HasPrefix(r.URL.Path, "/v1/secret/data/denied"):
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`))
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[]}`))
	}
}

func TestTenantTokenSurvivesARefusedPath(t *testing.T) {
	rv := &refusingVault{}
	srv := httptest.NewServer(rv)
	t.Cleanup(srv.Close)
	base, err := vault.NewClient(vault.Config{Address: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tenants := &Tenants{Base: base, Clock: clocktesting.NewFakeClock(time.Now())}
	var logins atomic.Int32
	login := func(context.Context, *api.Client) (*api.SecretAuth, error) {
		logins.Add(1)
		return &api.SecretAuth{ClientToken: "tenant-token", Accessor: "acc", LeaseDuration: 3600, Renewable: true}, nil
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
		rv.revoked.Store(st.revoke)
		if _, err := tok.Client.Logical().ReadWithContext(ctx, "secret/data/denied/x"); vault.Classify(err) != vault.KindDenied {
			t.Fatalf("%s: the refused read returned %v", st.name, err)
		}
		tenants.Refused(k)
		got, err := tenants.ClientFor(ctx, k, login)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if logins.Load() != st.wantLogins || rv.lookups.Load() != st.wantLookups {
			t.Fatalf("%s: %d logins and %d token checks, want %d and %d", st.name, logins.Load(), rv.lookups.Load(), st.wantLogins, st.wantLookups)
		}
		tok = got
		rv.revoked.Store(false)
	}
	// A token not refused is reused without any check.
	if _, err := tenants.ClientFor(ctx, k, login); err != nil || logins.Load() != 2 || rv.lookups.Load() != 2 {
		t.Fatalf("a trusted token was checked or replaced: err %v, %d logins, %d checks", err, logins.Load(), rv.lookups.Load())
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
