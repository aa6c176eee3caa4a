package syncer

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// A revoke Vault refuses is counted as a failed lease operation and as a
// Vault request with its result and latency: the revoke failures an
// operator is alerted on.
func TestRevokeFailureCounted(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Vault server of make tools")
	}
	// A real Vault whose policy lets the token revoke the lease def but
	// not the lease abc (Vault answers a revoke of a lease it does not
	// hold with success).
	v := harness.StartVault(t)
	v.Policy("revoke-def", `path "sys/leases/revoke/database/creds/app/def" { capabilities = ["update"] }`)
	sec, err := v.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"revoke-def"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(sec.Auth.ClientToken)
	m := NewMetrics(prometheus.NewRegistry())
	vio := &vaultIO{Metrics: m, Timeout: 5 * time.Second, Log: logr.Discard()}
	tok := &TenantToken{Client: c}
	if err := vio.releaseWith(context.Background(), tok, "database/creds/app/abc"); err == nil {
		t.Fatal("revoke answered 403 but releaseWith returned no error")
	}
	if err := vio.releaseWith(context.Background(), tok, "database/creds/app/def"); err != nil {
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
