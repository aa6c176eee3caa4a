package vault

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"
	testclock "k8s.io/utils/clock/testing"
)

// failingThenOK fails its first n logins, then returns a renewable token.
type failingThenOK struct {
	n, calls atomic.Int32
}

func (m *failingThenOK) Name() string { return "test" }

func (m *failingThenOK) Login(context.Context, *api.Client) (*api.SecretAuth, error) {
	if m.calls.Add(1) <= m.n.Load() {
		return nil, errors.New("login refused")
	}
	return &api.SecretAuth{ClientToken: "tok", Renewable: true, LeaseDuration: 3600}, nil
}

// Counts are what the plugin's login and renewal metrics export: failed
// logins, the login that worked, a renewal Vault granted and one it failed.
func TestSessionCountsLoginsAndRenewals(t *testing.T) {
	var renews atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/token/renew-self" {
			http.NotFound(w, r)
			return
		}
		if renews.Add(1) > 1 {
			http.Error(w, `{"errors":["internal error"]}`, http.StatusInternalServerError)
			return
		}
		io.WriteString(w, `{"auth":{"client_token":"tok","lease_duration":3600,"renewable":true}}`)
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(Config{Address: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := &failingThenOK{}
	m.n.Store(2)
	fc := testclock.NewFakeClock(time.Unix(1_700_000_000, 0))
	s := NewSession(c, m, logr.Discard())
	s.SetClock(fc)
	s.Backoff = BackoffPolicy{Min: time.Second, Max: time.Second, StableHold: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// advance steps the fake clock by d each time the session waits on it,
	// until cond holds.
	advance := func(d time.Duration, cond func(Counts) bool) {
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
	advance(time.Second, func(c Counts) bool { return c.Logins == 1 })
	if got := s.Counts(); got.LoginFailures != 2 || got.Renewals != 0 || got.RenewalFailures != 0 {
		t.Fatalf("after the first good login: %+v, want 2 failed logins and no renewal", got)
	}
	// The token is renewed at half its lifetime: granted once, then failed.
	advance(30*time.Minute, func(c Counts) bool { return c.Renewals == 1 })
	advance(30*time.Minute, func(c Counts) bool { return c.RenewalFailures >= 1 })
	if got := s.Counts(); got.Logins != 1 || got.LoginFailures != 2 || got.Renewals != 1 {
		t.Fatalf("after a granted and a failed renewal: %+v, want 1 login, 2 failed logins, 1 renewal", got)
	}
}
