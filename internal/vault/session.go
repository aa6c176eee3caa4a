package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"k8s.io/utils/clock"
)

// TokenState is what a Session knows of its token, for health and metrics.
type TokenState struct {
	// Valid is true while the session holds a token it believes Vault accepts.
	Valid bool
	// Expiry is when the token stops working; zero means it never expires.
	Expiry time.Time
	// Renewable tells whether Vault lets the token be renewed.
	Renewable bool
	// Reason says why the token is not valid.
	Reason string
	// Method is the auth method's name.
	Method string
}

// Session keeps one Vault client logged in: it logs in, renews the token with
// Vault's LifetimeWatcher, logs in again when the token can no longer be
// renewed or Vault refuses it, and re-reads a token file that changes.
// The client it returns carries the current token at all times.
type Session struct {
	client *api.Client
	method Method
	log    *slog.Logger
	clock  clock.WithTicker

	// FilePoll is how often a Fingerprinter's file is checked.
	FilePoll time.Duration
	// Backoff bounds the wait between failed logins.
	MinBackoff, MaxBackoff time.Duration

	relogin chan struct{}
	ready   chan struct{}
	once    sync.Once
	// loggedIn is closed and replaced at every successful login.
	loggedIn chan struct{}

	mu    sync.Mutex
	state TokenState
	token string
}

// NewSession returns a session that logs c in with m once Run is called.
func NewSession(c *api.Client, m Method, log *slog.Logger) *Session {
	if log == nil {
		log = slog.Default()
	}
	return &Session{
		client: c, method: m, log: log, clock: clock.RealClock{},
		FilePoll: 5 * time.Second, MinBackoff: 250 * time.Millisecond, MaxBackoff: 15 * time.Second,
		relogin: make(chan struct{}, 1), ready: make(chan struct{}), loggedIn: make(chan struct{}),
		state: TokenState{Reason: "not logged in yet", Method: m.Name()},
	}
}

// Client returns the shared client; its token follows the session.
func (s *Session) Client() *api.Client { return s.client }

// Ready is closed after the first successful login.
func (s *Session) Ready() <-chan struct{} { return s.ready }

// State reports the token's state.
func (s *Session) State() TokenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	if st.Valid && !st.Expiry.IsZero() && !s.clock.Now().Before(st.Expiry) {
		st.Valid = false
		st.Reason = "token expired"
	}
	return st
}

// Refused tells the session that Vault answered 403 to a request: the token
// was revoked or lost its policy. The session logs in again, once, however
// many requests report it.
func (s *Session) Refused() {
	s.mu.Lock()
	s.state.Valid = false
	s.state.Reason = "vault refused the token (403)"
	s.mu.Unlock()
	select {
	case s.relogin <- struct{}{}:
	default:
	}
}

// Relogin reports a refusal like Refused and waits until the session has
// logged in again, so the caller can retry its request once.
func (s *Session) Relogin(ctx context.Context) error {
	s.mu.Lock()
	next := s.loggedIn
	s.mu.Unlock()
	s.Refused()
	select {
	case <-next:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run logs in and keeps the token alive until ctx ends.
func (s *Session) Run(ctx context.Context) {
	backoff := s.MinBackoff
	for ctx.Err() == nil {
		auth, err := s.method.Login(ctx, s.client)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.setInvalid("login failed: " + Describe(err))
			s.log.Warn("vault login failed", "method", s.method.Name(), "error", Describe(err), "retry_in", backoff)
			s.sleep(ctx, backoff)
			backoff = min(backoff*2, s.MaxBackoff)
			continue
		}
		backoff = s.MinBackoff
		s.setToken(auth)
		s.log.Info("vault login succeeded", "method", s.method.Name(), "ttl", time.Duration(auth.LeaseDuration)*time.Second, "renewable", auth.Renewable)
		s.once.Do(func() { close(s.ready) })
		s.hold(ctx, auth)
	}
}

// hold keeps one token until it must be replaced.
func (s *Session) hold(ctx context.Context, auth *api.SecretAuth) {
	// Drain a refusal reported against the previous token.
	select {
	case <-s.relogin:
	default:
	}
	var done <-chan error
	var renewed <-chan *api.RenewOutput
	if auth.Renewable && auth.LeaseDuration > 0 {
		w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
			Secret:        &api.Secret{Auth: auth},
			RenewBehavior: api.RenewBehaviorErrorOnErrors,
		})
		if err != nil {
			s.log.Warn("vault token renewal unavailable", "error", err)
		} else {
			go w.Start()
			defer w.Stop()
			done, renewed = w.DoneCh(), w.RenewCh()
		}
	}
	var expire <-chan time.Time
	if auth.LeaseDuration > 0 && done == nil {
		t := s.clock.NewTimer(time.Duration(auth.LeaseDuration) * time.Second)
		defer t.Stop()
		expire = t.C()
	}
	fp, hasFP := s.method.(Fingerprinter)
	var last string
	var poll <-chan time.Time
	if hasFP {
		last, _ = fp.Fingerprint()
		t := s.clock.NewTicker(s.FilePoll)
		defer t.Stop()
		poll = t.C()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			if err != nil {
				s.log.Info("vault token renewal stopped; logging in again", "error", Describe(err))
			} else {
				s.log.Info("vault token reached its maximum lifetime; logging in again")
			}
			return
		case r := <-renewed:
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				s.mu.Lock()
				s.state.Expiry = s.clock.Now().Add(time.Duration(r.Secret.Auth.LeaseDuration) * time.Second)
				s.mu.Unlock()
			}
		case <-expire:
			s.log.Info("vault token expired; logging in again")
			return
		case <-s.relogin:
			s.log.Info("vault refused the token; logging in again")
			return
		case <-poll:
			cur, err := fp.Fingerprint()
			if err == nil && cur != last {
				s.log.Info("credential file changed; logging in again")
				return
			}
		}
	}
}

func (s *Session) setToken(auth *api.SecretAuth) {
	s.client.SetToken(auth.ClientToken)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = auth.ClientToken
	s.state = TokenState{Valid: true, Renewable: auth.Renewable, Method: s.method.Name()}
	if auth.LeaseDuration > 0 {
		s.state.Expiry = s.clock.Now().Add(time.Duration(auth.LeaseDuration) * time.Second)
	}
	close(s.loggedIn)
	s.loggedIn = make(chan struct{})
}

func (s *Session) setInvalid(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.Valid = false
	s.state.Reason = reason
}

func (s *Session) sleep(ctx context.Context, d time.Duration) {
	t := s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C():
	}
}

// WaitReady waits for the first login or ctx's end.
func (s *Session) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		st := s.State()
		return errors.Join(fmt.Errorf("vault login did not succeed: %s", st.Reason), ctx.Err())
	}
}
