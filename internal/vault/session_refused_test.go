package vault_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// okThenRefused logs in once, then every login fails as a used-up secret
// ID does.
type okThenRefused struct {
	calls atomic.Int32
	mint  func() (*api.SecretAuth, error)
}

func (m *okThenRefused) Name() string { return "test" }

func (m *okThenRefused) Login(context.Context, *api.Client) (*api.SecretAuth, error) {
	if m.calls.Add(1) == 1 {
		return m.mint()
	}
	return nil, errors.New("invalid role or secret ID")
}

// TestRefusedDeadTokenKeepsTheLoginError: once a refused token is found
// dead and its replacement's login fails, later refusals of the same
// token (every request still in flight with it, every key refresh) wait
// for the login without looking the token up again, and fail naming the
// login's error; so do refusals before the first login (no token yet).
// Each used to look the dead token up again, put "vault refused the token
// (403)" back (which the troubleshooting table reads as a policy
// problem), and fail saying only that the wait timed out.
func TestRefusedDeadTokenKeepsTheLoginError(t *testing.T) {
	v, c := startVault(t)
	m := &okThenRefused{mint: func() (*api.SecretAuth, error) {
		sec, err := v.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
		if err != nil {
			return nil, err
		}
		return sec.Auth, nil
	}}
	s := vault.NewSession(c, m, logr.Discard())
	s.Backoff = vault.BackoffPolicy{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond, StableHold: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	tok := s.Token()
	if err := v.Client().Auth().Token().RevokeTree(tok); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("HTTP 403: permission denied")
	refuse := func(token string) error {
		rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer rcancel()
		return s.Refused(rctx, token, refused)
	}
	if err := refuse(tok); err == nil {
		t.Fatal("Refused of a revoked token returned nil with no new token to use")
	}
	deadline := time.Now().Add(20 * time.Second) // a bound against a hang
	for !strings.Contains(s.State().Reason, "login failed") {
		if time.Now().After(deadline) {
			t.Fatalf("reason %q: the failing login never showed", s.State().Reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		err := refuse(tok)
		if err == nil || !strings.Contains(err.Error(), "login failed") {
			t.Errorf("Refused(the dead token) = %v, want an error naming the failing login", err)
		}
		if r := s.State().Reason; !strings.Contains(r, "login failed") {
			t.Errorf("reason %q after another refusal of the dead token, want the login's error", r)
		}
	}

	// Before any login: a request sent with no token is refused too.
	never := vault.NewSession(c, &okThenRefused{mint: func() (*api.SecretAuth, error) { return nil, errors.New("invalid role or secret ID") }}, logr.Discard())
	never.Backoff = s.Backoff
	go never.Run(ctx)
	for !strings.Contains(never.State().Reason, "login failed") {
		if time.Now().After(deadline) {
			t.Fatalf("reason %q: the failing first login never showed", never.State().Reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer rcancel()
	if err := never.Refused(rctx, "", refused); err == nil || !strings.Contains(err.Error(), "login failed") {
		t.Errorf("Refused with no token yet = %v, want an error naming the failing login", err)
	}
	if r := never.State().Reason; !strings.Contains(r, "login failed") {
		t.Errorf("reason %q after a refusal with no token yet, want the login's error", r)
	}
}

// hangsFirst hangs its first login until its context ends, then fails
// every later one at once.
type hangsFirst struct{ calls atomic.Int32 }

func (m *hangsFirst) Name() string { return "test" }

func (m *hangsFirst) Login(ctx context.Context, _ *api.Client) (*api.SecretAuth, error) {
	if m.calls.Add(1) == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, errors.New("invalid role or secret ID")
}

// TestLoginThatHangsIsCutOff: a login that never answers ends at
// LoginTimeout, is reported, and the session logs in again; it used to
// wait forever on the session's own context.
func TestLoginThatHangsIsCutOff(t *testing.T) {
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	m := &hangsFirst{}
	s := vault.NewSession(c, m, logr.Discard())
	s.LoginTimeout = 50 * time.Millisecond
	s.Backoff = vault.BackoffPolicy{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond, StableHold: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second) // a bound against a hang
	for m.calls.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("one login in 20 s: the hanging login was never cut off (reason %q)", s.State().Reason)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.Counts().LoginFailures; got < 1 {
		t.Errorf("%d failed logins counted, want the cut-off one", got)
	}
}
