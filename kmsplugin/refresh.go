package kmsplugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// Run refreshes the Transit key until ctx ends.
func (p *Plugin) Run(ctx context.Context) {
	t := p.clock.NewTicker(p.cfg.RefreshInterval)
	defer t.Stop()
	p.refresh(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-p.refreshNow:
		}
		p.refresh(ctx)
	}
}

func (p *Plugin) requestRefresh() {
	select {
	case p.refreshNow <- struct{}{}:
	default:
	}
}

func (p *Plugin) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	start := p.clock.Now()
	tok := p.token()
	ki, err := p.transit.ReadKey(ctx)
	p.observeVault("read_key", start, err)
	p.noteVault(pathReadKey, ctx, err)
	if err != nil {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return
		}
		p.countRefresh("error")
		if vault.Classify(err) == vault.KindDenied && p.tokens != nil {
			// A failed login shows in health and in the next refresh.
			_ = p.tokens.Refused(ctx, tok, err)
		}
		p.log.Info("cannot read transit key", "mount", p.cfg.Mount, "key", p.cfg.Key, "error", vault.Describe(err))
		p.publishHealth()
		return
	}
	p.countRefresh("ok")
	v := ki.LatestVersion
	id := transitkey.NewKeyID(p.cfg.Namespace, p.cfg.Mount, p.cfg.Key, v, ki.Created[v])
	text := id.String()
	if len(text) > maxKeyIDLen {
		// kube-apiserver refuses such a key_id; saying so here is clearer.
		p.hmu.Lock()
		p.h.FailureReason = fmt.Sprintf("key_id would be %d bytes, kube-apiserver allows %d: use a shorter --transit-key, --transit-mount or --vault-namespace", len(text), maxKeyIDLen)
		p.hmu.Unlock()
		p.current.Store(nil)
		p.publishHealth()
		return
	}
	// Encrypt batches may lean on this read like on one of their own. It
	// goes in before the key it names becomes current, so a batch pinned
	// to a new version never meets an older read without that version.
	done := &keyRead{sent: start, done: make(chan struct{}), ki: ki}
	close(done.done)
	p.kmu.Lock()
	p.kread = done
	p.kmu.Unlock()
	prev := p.current.Load()
	if prev == nil || prev.text != text {
		p.current.Store(&currentKey{id: id, text: text, since: p.clock.Now()})
		if prev == nil {
			p.log.Info("transit key read", "version", v, "keyID", text)
		} else {
			p.log.Info("transit key changed", "fromVersion", prev.id.Version, "toVersion", v, "keyID", text)
		}
	}
	if p.m != nil {
		p.m.keyVersion.Set(float64(v))
		if c := ki.Created[v]; !c.IsZero() {
			p.m.keyCreated.Set(float64(c.Unix()))
		}
	}
	if p.pathFailing(pathEncrypt) || p.pathFailing(pathDecrypt) {
		// Encrypt and Decrypt may be rare; a failure of theirs stays in
		// Status until one of them succeeds, so the refresher proves the
		// path with a seed of its own rather than wait for them.
		p.probe(ctx, id)
	}
	p.publishHealth()
}
