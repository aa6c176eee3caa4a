package syncer

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// A revoke Vault refuses is counted as a failed lease operation and as a
// Vault request with its result and latency: the revoke failures an
// operator is alerted on.
func TestRevokeFailureCounted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/sys/leases/revoke/database/creds/app/abc" {
			http.Error(w, `{"errors":["permission denied"]}`, http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	c, err := vault.NewClient(vault.Config{Address: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	v := &vaultIO{Metrics: m, Timeout: 5 * time.Second, Log: logr.Discard()}
	tok := &TenantToken{Client: c}
	if err := v.releaseWith(context.Background(), tok, "database/creds/app/abc"); err == nil {
		t.Fatal("revoke answered 403 but releaseWith returned no error")
	}
	if err := v.releaseWith(context.Background(), tok, "database/creds/app/def"); err != nil {
		t.Fatalf("revoke answered 204: %v", err)
	}
	if got := testutil.ToFloat64(m.leases.WithLabelValues("revoke", "denied")); got != 1 {
		t.Fatalf(`lease_operations_total{operation="revoke",result="denied"} = %v, want 1`, got)
	}
	if got := testutil.ToFloat64(m.leases.WithLabelValues("revoke", "ok")); got != 1 {
		t.Fatalf(`lease_operations_total{operation="revoke",result="ok"} = %v, want 1`, got)
	}
	if got := testutil.CollectAndCount(m.vault, "vaultkms_controller_vault_request_duration_seconds"); got != 2 {
		t.Fatalf("vault_request_duration_seconds has %d series, want 2 (revoke ok and revoke denied)", got)
	}
}
