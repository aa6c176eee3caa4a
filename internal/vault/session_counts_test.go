package vault_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"
	testclock "k8s.io/utils/clock/testing"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// failingThenOK fails its first n logins, then returns a renewable token
// that mint has Vault make.
type failingThenOK struct {
	n, calls atomic.Int32
	mint     func() (*api.SecretAuth, error)
}

func (m *failingThenOK) Name() string { return "test" }

func (m *failingThenOK) Login(context.Context, *api.Client) (*api.SecretAuth, error) {
	if m.calls.Add(1) <= m.n.Load() {
		return nil, errors.New("login refused")
	}
	return m.mint()
}

// Counts are what the plugin's login and renewal metrics export: failed
// logins, the login that worked, a renewal Vault granted and one it failed.
func TestSessionCountsLoginsAndRenewals(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Vault server of make tools")
	}
	v := harness.StartVault(t)
	c, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	renewable := true
	m := &failingThenOK{mint: func() (*api.SecretAuth, error) {
		sec, err := v.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h", Renewable: &renewable})
		if err != nil {
			return nil, err
		}
		return sec.Auth, nil
	}}
	m.n.Store(2)
	fc := testclock.NewFakeClock(time.Unix(1_700_000_000, 0))
	s := vault.NewSession(c, m, logr.Discard())
	s.SetClock(fc)
	s.Backoff = vault.BackoffPolicy{Min: time.Second, Max: time.Second, StableHold: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// advance steps the fake clock by d each time the session waits on it,
	// until cond holds.
	advance := func(d time.Duration, cond func(vault.Counts) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second) // a bound against a hang, not a measurement
		for !cond(s.Counts()) {
			if time.Now().After(deadline) {
				t.Fatalf("counts never reached the expected state: %+v", s.Counts())
			}
			if fc.HasWaiters() {
				fc.Step(d)
			}
			time.Sleep(time.Millisecond)
		}
	}
	advance(time.Second, func(c vault.Counts) bool { return c.Logins == 1 })
	if got := s.Counts(); got.LoginFailures != 2 || got.Renewals != 0 || got.RenewalFailures != 0 {
		t.Fatalf("after the first good login: %+v, want 2 failed logins and no renewal", got)
	}
	// The token is renewed at half its lifetime: granted once, then failed.
	advance(30*time.Minute, func(c vault.Counts) bool { return c.Renewals == 1 })
	// A sealed Vault answers 503: the next renewal fails.
	v.Seal()
	advance(30*time.Minute, func(c vault.Counts) bool { return c.RenewalFailures >= 1 })
	if got := s.Counts(); got.Logins != 1 || got.LoginFailures != 2 || got.Renewals != 1 {
		t.Fatalf("after a granted and a failed renewal: %+v, want 1 login, 2 failed logins, 1 renewal", got)
	}
}
