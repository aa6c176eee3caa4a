package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"
	"k8s.io/utils/clock"
)

// TokenState is what a Session knows of its token, for health and metrics.
type TokenState struct {
	// Valid is true while the session holds a token it believes Vault accepts.
	Valid bool
	// Expiry is when the token stops working; zero means it never expires.
	Expiry time.Time
	// Renewable tells whether the session still renews the token.
	Renewable bool
	// Reason says why the token is not valid.
	Reason string
	// Method is the auth method's name.
	Method string
}

// Borrower is a Method whose token belongs to someone else (a token file
// written by an operator or Vault Agent): the session never revokes it.
type Borrower interface{ Borrowed() bool }

// Session keeps one Vault client logged in. It renews the token while
// Vault lets it, replaces it shortly before it expires, logs in again when
// Vault refuses it or a credential file changes, and revokes the tokens it
// replaced. Logins are paced by a back-off that only a token held for
// StableHold resets, so no failure mode can make it log in faster than the
// documented bound (see LoginBound).
type Session struct {
	client *api.Client
	method Method
	log    logr.Logger
	clock  clock.WithTicker

	// FilePoll is how often a Fingerprinter's file is checked.
	FilePoll time.Duration
	// Backoff paces logins, failed or not; see NextLoginWait.
	Backoff BackoffPolicy
	// VerifyInterval is how long a token found valid after a 403 is
	// trusted before another 403 makes the session check it again.
	VerifyInterval time.Duration
	// LoginTimeout bounds one login, whatever the method does inside it.
	LoginTimeout time.Duration

	relogin chan string
	ready   chan struct{}
	once    sync.Once
	logins  atomic.Int64
	// Counted for metrics: failed logins, and renewals by outcome.
	loginFailures, renewals, renewalFailures atomic.Int64

	mu       sync.Mutex
	state    TokenState
	token    string
	loggedIn chan struct{} // closed and replaced at every new token
	check    *tokenCheck
	// validToken was found valid at validAt after a 403; deadToken was
	// found refused, and is being replaced.
	validToken, deadToken string
	validAt               time.Time
}

// NewSession returns a session that logs c in with m once Run is called.
func NewSession(c *api.Client, m Method, log logr.Logger) *Session {
	if log.GetSink() == nil {
		log = logr.Discard()
	}
	return &Session{
		client: c, method: m, log: log.WithValues("method", m.Name()), clock: clock.RealClock{},
		FilePoll: 5 * time.Second, Backoff: DefaultBackoff, VerifyInterval: 10 * time.Second, LoginTimeout: 30 * time.Second,
		relogin: make(chan string, 1), ready: make(chan struct{}), loggedIn: make(chan struct{}),
		state: TokenState{Reason: "not logged in yet", Method: m.Name()},
	}
}

// SetClock replaces the clock, for tests.
func (s *Session) SetClock(c clock.WithTicker) { s.clock = c }

// Client returns the shared client; its token follows the session.
func (s *Session) Client() *api.Client { return s.client }

// Token returns the current token, to be passed back to Refused when Vault
// refuses a request made with it.
func (s *Session) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// Logins counts successful logins.
func (s *Session) Logins() int64 { return s.logins.Load() }

// Counts are a session's logins and token renewals since it started.
type Counts struct {
	Logins, LoginFailures, Renewals, RenewalFailures int64
}

// Counts reports the logins and renewals so far, for metrics: a failed
// renewal or re-login is what an operator is alerted on, not a low TTL,
// which every token cycle passes through.
func (s *Session) Counts() Counts {
	return Counts{Logins: s.logins.Load(), LoginFailures: s.loginFailures.Load(),
		Renewals: s.renewals.Load(), RenewalFailures: s.renewalFailures.Load()}
}

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

// Run logs in and keeps the token alive until ctx ends.
func (s *Session) Run(ctx context.Context) {
	var wait time.Duration
	var last time.Time
	for ctx.Err() == nil {
		if !last.IsZero() {
			if d := last.Add(wait).Sub(s.clock.Now()); d > 0 {
				s.sleep(ctx, d)
				if ctx.Err() != nil {
					return
				}
			}
		}
		last = s.clock.Now()
		// The fingerprint is taken before the login reads the file, so a
		// change that lands during the login is seen afterwards.
		fp, hasFP := s.method.(Fingerprinter)
		var sum string
		if hasFP {
			sum, _ = fp.Fingerprint()
		}
		// A login has a deadline of its own, as every other Vault call
		// does: one that hangs (an address that accepts and never answers,
		// a client built without a timeout) must not end the session's
		// logins for good.
		lctx, cancel := context.WithTimeout(ctx, s.LoginTimeout)
		auth, err := s.method.Login(lctx, s.client)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.loginFailures.Add(1)
			wait = NextLoginWait(wait, 0, true, s.Backoff)
			s.setInvalid("login failed: " + Describe(err))
			s.log.Info("vault login failed", "error", Describe(err), "retryIn", wait)
			continue
		}
		s.logins.Add(1)
		prev := s.setToken(auth)
		if _, borrowed := s.method.(Borrower); prev != "" && prev != auth.ClientToken && !borrowed {
			go s.revoke(prev)
		}
		s.log.Info("vault login succeeded", "ttl", time.Duration(auth.LeaseDuration)*time.Second, "renewable", auth.Renewable)
		s.once.Do(func() { close(s.ready) })
		obtained := s.clock.Now()
		refused := s.hold(ctx, auth, fp, sum)
		// A token Vault refused counts as a failed login, however long
		// it was kept: one refused every 10 s or more would otherwise
		// keep the wait at its minimum and log in several times a
		// minute, past the bound LoginBound promises.
		wait = NextLoginWait(wait, s.clock.Since(obtained), refused, s.Backoff)
	}
}

// hold keeps one token until it must be replaced: renewing it at half its
// remaining lifetime while Vault allows, and giving it up ReplaceGrace
// before it expires, when Vault refuses it, or when the credential file
// changes. A renewal Vault refuses (403: no renew-self) or cannot answer
// (429, unavailable) never drops the token early.
// It reports whether the token ended because Vault refused it.
func (s *Session) hold(ctx context.Context, auth *api.SecretAuth, fp Fingerprinter, sum string) (refused bool) {
	token := auth.ClientToken
	ttl := time.Duration(auth.LeaseDuration) * time.Second
	now := s.clock.Now()
	renewable := auth.Renewable && ttl > 0
	var expiry, renewAt time.Time
	if ttl > 0 {
		expiry = now.Add(ttl)
		renewAt = now.Add(ttl / 2)
	}
	grace := ReplaceGrace(ttl)
	retry := time.Second
	var poll <-chan time.Time
	if fp != nil {
		t := s.clock.NewTicker(s.FilePoll)
		defer t.Stop()
		poll = t.C()
	}
	for {
		var timer clock.Timer
		var fire <-chan time.Time
		if ttl > 0 {
			next := expiry.Add(-grace)
			if renewable && renewAt.Before(next) {
				next = renewAt
			}
			timer = s.clock.NewTimer(max(0, next.Sub(s.clock.Now())))
			fire = timer.C()
		}
		stop := func() {
			if timer != nil {
				timer.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stop()
			return false
		case <-fire:
			now := s.clock.Now()
			if !now.Before(expiry.Add(-grace)) {
				s.log.Info("vault token is close to its expiry; logging in again")
				return false
			}
			got, err := s.renew(ctx, token, ttl)
			if err != nil {
				s.renewalFailures.Add(1)
			} else {
				s.renewals.Add(1)
			}
			switch {
			case err == nil:
				expiry = now.Add(got)
				s.mu.Lock()
				if s.token == token {
					s.state.Expiry = expiry
				}
				s.mu.Unlock()
				if got < ttl {
					// Capped by the token's maximum lifetime: keep it
					// until shortly before then.
					renewable = false
					s.setRenewable(token, false)
					s.log.Info("vault token reached its maximum lifetime; it is replaced shortly before it expires", "expiresIn", got)
				} else {
					renewAt = now.Add(got / 2)
					retry = time.Second
				}
			case Classify(err) == KindDenied:
				renewable = false
				s.setRenewable(token, false)
				s.log.Info("vault refused to renew the token; it is used until shortly before it expires", "error", Describe(err))
			default:
				renewAt = now.Add(retry)
				s.log.Info("vault token renewal failed; retrying", "error", Describe(err), "retryIn", retry)
				retry = min(2*retry, max(time.Second, ttl/4))
			}
		case t := <-s.relogin:
			stop()
			if t == token {
				s.log.Info("vault refused the token; logging in again")
				return true
			}
		case <-poll:
			stop()
			cur, err := fp.Fingerprint()
			if err == nil && cur != sum {
				s.log.Info("credential file changed; logging in again")
				return false
			}
		}
	}
}

func (s *Session) renew(ctx context.Context, token string, increment time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lc, err := s.client.CloneWithHeaders()
	if err != nil {
		return 0, fmt.Errorf("clone vault client: %w", err)
	}
	lc.SetToken(token)
	sec, err := lc.Auth().Token().RenewSelfWithContext(ctx, int(increment.Seconds()))
	if err != nil {
		return 0, Wrap("renew the vault token", err)
	}
	if sec == nil || sec.Auth == nil {
		return 0, &Error{Kind: KindOther, Op: "renew the vault token", Detail: "vault returned no auth data"}
	}
	return time.Duration(sec.Auth.LeaseDuration) * time.Second, nil
}

// revoke revokes a token the session obtained and no longer uses, so
// replaced tokens do not pile up in Vault until they expire.
func (s *Session) revoke(token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lc, err := s.client.CloneWithHeaders()
	if err != nil {
		return
	}
	lc.SetToken(token)
	if err := lc.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil && Classify(err) != KindDenied {
		s.log.Info("revoking a replaced vault token failed; it lives until it expires", "error", Describe(Wrap("revoke", err)))
	}
}

// setToken installs a new token and returns the one it replaces.
func (s *Session) setToken(auth *api.SecretAuth) string {
	s.client.SetToken(auth.ClientToken)
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.token
	s.token = auth.ClientToken
	s.state = TokenState{Valid: true, Renewable: auth.Renewable, Method: s.method.Name()}
	if auth.LeaseDuration > 0 {
		s.state.Expiry = s.clock.Now().Add(time.Duration(auth.LeaseDuration) * time.Second)
	}
	close(s.loggedIn)
	s.loggedIn = make(chan struct{})
	return prev
}

func (s *Session) setRenewable(token string, r bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == token {
		s.state.Renewable = r
	}
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
