package kmsplugin

import (
	"context"
	"time"

	"github.com/vaultkms/vaultkms/internal/transitkey"
)

// keyCheckReuse is how long after it was sent one read of the Transit key
// may vouch for the encrypt batches that follow. A read per batch cost as
// much in Vault as the encrypt it checked; one per window costs a few per
// second at any load, and a key deleted and created again is still
// noticed by every encrypt sent more than this long afterwards (before,
// the window was one round trip; deleting and recreating a key takes an
// operator three requests in any case).
const keyCheckReuse = 50 * time.Millisecond

// keyRead is one read of the Transit key that encrypt batches share.
type keyRead struct {
	sent time.Time
	done chan struct{}
	ki   transitkey.KeyInfo
	err  error
}

// failed tells whether the read has ended with an error.
func (r *keyRead) failed() bool {
	select {
	case <-r.done:
		return r.err != nil
	default:
		return false
	}
}

// keyCheck returns a read of the key sent no more than keyCheckReuse ago
// (still in flight or answered), or starts one beside the batch's encrypt.
// A failed read is never reused.
func (p *Plugin) keyCheck() *keyRead {
	now := p.clock.Now()
	p.kmu.Lock()
	defer p.kmu.Unlock()
	if r := p.kread; r != nil && now.Sub(r.sent) <= keyCheckReuse && !r.failed() {
		return r
	}
	r := &keyRead{sent: now, done: make(chan struct{})}
	p.kread = r
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CallTimeout)
		defer cancel()
		r.ki, r.err = p.transit.ReadKey(ctx)
		close(r.done)
	}()
	return r
}
