package kmsplugin

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// The version in use and its creation time follow the key the refresher
// read, so "rotation overdue" is time() minus the created gauge.
func TestKeyVersionAndCreationTimeFollowTheKey(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	tr := &stubTransit{info: keyInfo(2)}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	p := New(Config{Mount: "transit", Key: "kms", RefreshInterval: 10 * time.Second}, tr, &stubTokens{state: vault.TokenState{Valid: true}}, m, clk, logr.Discard())
	p.refresh(context.Background())
	if got := testutil.ToFloat64(m.keyVersion); got != 2 {
		t.Fatalf("vaultkms_plugin_transit_key_version = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.keyCreated); got != 2000 {
		t.Fatalf("vaultkms_plugin_transit_key_created_timestamp_seconds = %v, want 2000 (version 2's creation)", got)
	}
	tr.mu.Lock()
	tr.info = keyInfo(3)
	tr.mu.Unlock()
	p.refresh(context.Background())
	if got := testutil.ToFloat64(m.keyCreated); got != 3000 {
		t.Fatalf("after a rotation: created = %v, want 3000 (version 3's creation)", got)
	}
	want := `
# HELP vaultkms_plugin_build_info Build information of the vaultkms plugin; the value is always 1.
# TYPE vaultkms_plugin_build_info gauge
vaultkms_plugin_build_info{goversion="` + runtime.Version() + `",version="` + Version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "vaultkms_plugin_build_info"); err != nil {
		t.Fatal(err)
	}
}

type countsStub vault.Counts

func (c countsStub) Counts() vault.Counts { return vault.Counts(c) }

func TestVaultCountersReadTheSession(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterVaultCounters(reg, countsStub{Logins: 3, LoginFailures: 5, Renewals: 7, RenewalFailures: 1}, func() uint64 { return 2 })
	want := `
# HELP vaultkms_plugin_vault_address_failovers_total Moves to another --vault-addr address because the one in use could not be reached.
# TYPE vaultkms_plugin_vault_address_failovers_total counter
vaultkms_plugin_vault_address_failovers_total 2
# HELP vaultkms_plugin_vault_logins_total Vault logins of the plugin, by result (ok, error).
# TYPE vaultkms_plugin_vault_logins_total counter
vaultkms_plugin_vault_logins_total{result="error"} 5
vaultkms_plugin_vault_logins_total{result="ok"} 3
# HELP vaultkms_plugin_vault_token_renewals_total Renewals of the plugin's Vault token, by result (ok, error).
# TYPE vaultkms_plugin_vault_token_renewals_total counter
vaultkms_plugin_vault_token_renewals_total{result="error"} 1
vaultkms_plugin_vault_token_renewals_total{result="ok"} 7
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
