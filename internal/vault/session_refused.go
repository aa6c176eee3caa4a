package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrTokenValid is returned by Refused when Vault refused a request but
// the token itself is valid: a policy does not allow the path, and logging
// in again would not change that.
var ErrTokenValid = errors.New("vault refused the request, but the token is valid: a policy does not allow this path (logging in again would not help)")

type tokenCheck struct {
	token string
	done  chan struct{}
	valid bool
	err   error
}

// Refused tells the session that Vault answered 403 (cause) to a request
// made with token. It returns nil once a newer token is in place (retry the request
// once), ErrTokenValid when the token is fine and the path is what Vault
// refused (do not retry), or another error. However many callers report
// the same token, it is checked once and replaced at most once; a token
// found valid is not checked again for VerifyInterval (unless Vault's
// answer says "invalid token"), so a missing policy costs no login at all.
func (s *Session) Refused(ctx context.Context, token string, cause error) error {
	s.mu.Lock()
	if token != s.token {
		s.mu.Unlock()
		return nil
	}
	if token == "" || (s.deadToken == token && !s.state.Valid) {
		// No token yet, or one already found dead whose replacement is
		// being logged in: asking Vault again would only cost a lookup
		// and overwrite the reason the login gave (a bad secret ID) with
		// "refused". Wait for the new token.
		next, reason := s.loggedIn, s.state.Reason
		s.mu.Unlock()
		select {
		case <-next:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("waiting for a new vault token (%s): %w", reason, ctx.Err())
		}
	}
	if s.validToken == token && s.clock.Since(s.validAt) < s.VerifyInterval && !saysInvalidToken(cause) {
		s.mu.Unlock()
		return ErrTokenValid
	}
	next := s.loggedIn
	c := s.check
	if c == nil || c.token != token {
		c = &tokenCheck{token: token, done: make(chan struct{})}
		s.check = c
		go s.verify(c)
	}
	s.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	switch {
	case c.valid:
		return ErrTokenValid
	case c.err != nil:
		return c.err
	}
	select {
	case <-next:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a new vault token: %w", ctx.Err())
	}
}

// saysInvalidToken tells whether Vault's 403 names the token itself as
// invalid (revoked, expired, unknown), not only the path as denied.
func saysInvalidToken(err error) bool {
	return err != nil && strings.Contains(err.Error(), "invalid token")
}

// verify looks the refused token up: valid means the refusal was about
// the path; refused means the token is gone and is replaced.
func (s *Session) verify(c *tokenCheck) {
	defer func() {
		// A finished check is forgotten; its verdict lives on in
		// validToken or in the new token.
		s.mu.Lock()
		if s.check == c {
			s.check = nil
		}
		s.mu.Unlock()
		close(c.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lc, err := s.client.CloneWithHeaders()
	if err != nil {
		c.err = fmt.Errorf("clone vault client: %w", err)
		return
	}
	lc.SetToken(c.token)
	_, err = lc.Auth().Token().LookupSelfWithContext(ctx)
	switch {
	case err == nil:
		c.valid = true
		s.mu.Lock()
		s.validToken, s.validAt = c.token, s.clock.Now()
		s.mu.Unlock()
		s.log.Info("vault refused a request though the token is valid; check the policy", "reason", "path denied")
	case Classify(err) == KindDenied:
		s.mu.Lock()
		current := s.token == c.token
		if current {
			s.state.Valid = false
			s.state.Reason = "vault refused the token (403)"
			s.deadToken = c.token
		}
		s.mu.Unlock()
		if !current {
			return // already replaced
		}
		// Only the current token's refusal matters: replace whatever
		// older refusal still waits in the channel.
		for {
			select {
			case s.relogin <- c.token:
				return
			default:
			}
			select {
			case <-s.relogin:
			default:
			}
		}
	default:
		c.err = Wrap("check the refused token", err)
	}
}
