package kmsplugin

import (
	"context"
	"errors"
	"time"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// vaultPath is a kind of Vault request whose health is tracked on its
// own: a key read that succeeds says nothing of an encrypt that fails.
type vaultPath int

const (
	pathReadKey vaultPath = iota
	pathEncrypt
	pathDecrypt
	numPaths
)

func (v vaultPath) String() string {
	return [...]string{"read key", "encrypt", "decrypt"}[v]
}

// pathState is the latest outcome of one kind of request.
type pathState struct {
	failing bool
	since   time.Time
	reason  string
}

// callerLeft tells whether ctx ended because its callers went away (a
// cancellation), which says nothing about Vault; a deadline does.
func callerLeft(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled)
}

// noteVault records the outcome of a request on path made with ctx. Any
// failure counts, whatever Vault answered (a redirect, a wrong result
// count, an unusable answer, 405, 413), except the callers' own
// cancellation. A bad item from kube-apiserver is an item's error, not a
// request's, and is not seen here.
func (p *Plugin) noteVault(path vaultPath, ctx context.Context, err error) {
	if err != nil && callerLeft(ctx) {
		return
	}
	p.noteOutcome(path, err)
}

func (p *Plugin) noteOutcome(path vaultPath, err error) {
	now := p.clock.Now()
	p.hmu.Lock()
	defer p.hmu.Unlock()
	st := &p.paths[path]
	if err != nil {
		if !st.failing {
			st.failing, st.since = true, now
		}
		st.reason = path.String() + ": " + vault.Describe(err)
		return
	}
	p.h.LastSuccess = now
	*st = pathState{}
}

func (p *Plugin) pathFailing(path vaultPath) bool {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	return p.paths[path].failing
}

// Health returns "ok" or why the plugin is not healthy.
func (p *Plugin) Health() string {
	p.hmu.Lock()
	h := p.h
	// Known is what Status answers with, not a flag set beside it: a
	// key_id and "not read yet" can never be seen together, nor "ok"
	// without a key_id.
	h.KeyKnown = p.current.Load() != nil
	for _, st := range p.paths {
		if st.failing && (!h.Failing || st.since.Before(h.FailingSince)) {
			h.Failing, h.FailingSince, h.FailureReason = true, st.since, st.reason
		}
	}
	p.hmu.Unlock()
	if p.tokens != nil {
		ts := p.tokens.State()
		h.TokenValid, h.TokenExpiry, h.TokenReason = ts.Valid, ts.Expiry, ts.Reason
	} else {
		h.TokenValid = true
	}
	return h.evaluate(p.clock.Now(), p.cfg.MaxSilence)
}

func (p *Plugin) publishHealth() {
	if p.m == nil {
		return
	}
	if p.Health() == healthOK {
		p.m.healthy.Set(1)
	} else {
		p.m.healthy.Set(0)
	}
	if p.tokens != nil {
		ts := p.tokens.State()
		switch {
		case !ts.Valid:
			p.m.tokenTTL.Set(0)
		case ts.Expiry.IsZero():
			p.m.tokenTTL.Set(-1)
		default:
			p.m.tokenTTL.Set(max(0, ts.Expiry.Sub(p.clock.Now()).Seconds()))
		}
	}
}

// noteEncryptItems records, for health, whether an encrypt batch that
// Vault answered had any item succeed.
func (p *Plugin) noteEncryptItems(errs []error) {
	var firstErr error
	for _, e := range errs {
		if e == nil {
			p.hmu.Lock()
			p.h.EncryptFailing = false
			p.hmu.Unlock()
			return
		}
		if firstErr == nil {
			firstErr = e
		}
	}
	if firstErr == nil || vault.Classify(firstErr) == vault.KindUnavailable {
		return
	}
	p.hmu.Lock()
	p.h.EncryptFailing, p.h.EncryptFailure = true, vault.Describe(firstErr)
	p.hmu.Unlock()
	p.publishHealth()
}
