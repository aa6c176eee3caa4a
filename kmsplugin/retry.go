package kmsplugin

import (
	"context"
	"fmt"
	"time"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// retryWaits are the pauses before the second and third attempt of a
// Transit request. Encrypt and decrypt change nothing in Vault, so a retry
// is always safe; it happens only while the caller's deadline allows.
var retryWaits = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond}

// transitBatch sends one Transit request for path, retrying what waiting
// can fix and re-logging in once after a refused token, and records each
// attempt's outcome for health.
func (p *Plugin) transitBatch(ctx context.Context, path vaultPath, call func(context.Context, string) ([]itemResult, error)) ([]string, []error, error) {
	var res []itemResult
	var err error
	relogged := false
	for attempt := 0; ; attempt++ {
		start := p.clock.Now()
		tok := p.token()
		res, err = call(ctx, tok)
		p.observeVault(path.metricName(), start, err)
		p.noteVault(path, ctx, err)
		if err != nil && vault.Classify(err) == vault.KindDenied && !relogged && p.tokens != nil {
			// A revoked or expired token: once a newer token is in
			// place, retry once so kube-apiserver's call still succeeds.
			// A valid token refused by policy is not retried.
			relogged = true
			if p.tokens.Refused(ctx, tok, err) == nil {
				attempt--
				continue
			}
		}
		if err == nil || attempt >= len(retryWaits) || vault.Classify(err) != vault.KindUnavailable || ctx.Err() != nil {
			break
		}
		// Real time, not the injected clock: this paces network retries.
		t := time.NewTimer(retryWaits[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("%w (after %d attempts)", err, attempt+1)
		case <-t.C:
		}
	}
	if err != nil {
		if k := vault.Classify(err); k == vault.KindUnavailable || k == vault.KindNotFound {
			p.requestRefresh()
		}
		p.publishHealth()
		return nil, nil, err
	}
	outs := make([]string, len(res))
	errs := make([]error, len(res))
	for i, r := range res {
		outs[i], errs[i] = r.Value, r.Err
		if r.Err != nil && path == pathEncrypt {
			// An encrypt rejected for its key version means the key
			// changed under us (deleted and recreated, say): re-read it.
			p.requestRefresh()
		}
	}
	return outs, errs, nil
}

func (v vaultPath) metricName() string {
	return [...]string{"read_key", "encrypt", "decrypt"}[v]
}

func (p *Plugin) decryptBatch(ctx context.Context, cts []string) ([]string, []error, error) {
	return p.transitBatch(ctx, pathDecrypt, func(ctx context.Context, tok string) ([]itemResult, error) {
		return p.transit.DecryptBatch(ctx, tok, cts)
	})
}
