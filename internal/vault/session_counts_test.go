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
	v, c := startVault(t)
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

// tokenMinter has Vault make a new token at every login.
type tokenMinter struct {
	mint func() (*api.SecretAuth, error)
}

func (m tokenMinter) Name() string { return "test" }

func (m tokenMinter) Login(context.Context, *api.Client) (*api.SecretAuth, error) { return m.mint() }

// TestRefusedTokensKeepTheLoginBound: every token is revoked 15 s after
// it is issued (longer than StableHold), and the session told so. Logins
// over five minutes stay within LoginBound. A token kept past StableHold
// used to halve the wait whatever ended it, so this pattern logged in
// every 15.5 s, 21 times, past the bound of 15.
func TestRefusedTokensKeepTheLoginBound(t *testing.T) {
	v, c := startVault(t)
	m := tokenMinter{mint: func() (*api.SecretAuth, error) {
		sec, err := v.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
		if err != nil {
			return nil, err
		}
		return sec.Auth, nil
	}}
	start := time.Unix(1_700_000_000, 0)
	fc := testclock.NewFakeClock(start)
	s := vault.NewSession(c, m, logr.Discard())
	s.SetClock(fc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	const window = 5 * time.Minute
	refused := errors.New("HTTP 403: permission denied, invalid token")
	guard := time.Now().Add(2 * time.Minute) // a bound against a hang, not a measurement
	prev := ""
	for fc.Since(start) < window {
		for s.Token() == prev || s.Token() == "" {
			if time.Now().After(guard) {
				t.Fatalf("no new token at %s of fake time (%d logins)", fc.Since(start), s.Logins())
			}
			if fc.HasWaiters() {
				fc.Step(100 * time.Millisecond)
			}
			time.Sleep(time.Millisecond)
		}
		prev = s.Token()
		fc.Step(15 * time.Second)
		if err := v.Client().Auth().Token().RevokeTree(prev); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_ = s.Refused(rctx, prev, refused) // waits for the next login, which the fake clock holds back
		rcancel()
	}
	if n, bound := s.Logins(), vault.LoginBound(window, vault.DefaultBackoff); int(n) > bound {
		t.Fatalf("%d logins in %s of tokens refused after 15 s each, want at most LoginBound = %d", n, window, bound)
	}
}

// startVault starts a Vault server of make tools and a client for it
// without a token.
func startVault(t *testing.T) (*harness.Vault, *api.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the Vault server of make tools")
	}
	v := harness.StartVault(t)
	c, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return v, c
}
