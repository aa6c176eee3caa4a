package kmsplugin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// encryptBatch wraps the batch's seeds and proves every wrapped seed
// before it is answered: the ciphertext must name the version asked for
// and decrypt (same key, same associated data) to the very seed. A
// wrapped seed that does not is lost data once kube-apiserver stores it,
// so a failed proof is an error and makes Status unhealthy, never an
// answer.
func (p *Plugin) encryptBatch(ctx context.Context, items []encryptItem) ([]string, []error, error) {
	// The key is read beside the encrypt: a key deleted and created again
	// under the same name keeps its version numbers, and only the
	// version's creation time tells the new key from the old. A seed
	// wrapped by the new key must not leave with the old key_id.
	check := p.keyCheck()
	outs, errs, err := p.transitBatch(ctx, pathEncrypt, func(ctx context.Context, tok string) ([]itemResult, error) {
		return p.transit.EncryptBatch(ctx, tok, items)
	})
	var rr *keyRead
	select {
	case <-check.done:
		rr = check
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if err != nil {
		return outs, errs, err
	}
	if rr.err == nil {
		changed := false
		for i, it := range items {
			if c, ok := rr.ki.Created[it.version]; !ok || !c.Equal(it.created) {
				changed = true
				outs[i], errs[i] = "", &vault.Error{Kind: vault.KindUnavailable, Op: "transit encrypt", Detail: fmt.Sprintf("key version %d changed (the key was deleted and created again); its new key_id is being read, retry", it.version)}
			}
		}
		if changed {
			p.requestRefresh()
		}
	}
	if err := p.prove(ctx, items, outs, errs); err != nil {
		return nil, nil, err
	}
	p.noteEncryptItems(errs)
	return outs, errs, nil
}

// errNotProven is a wrapped seed that failed its proof.
func errNotProven(detail string) error {
	return &vault.Error{Kind: vault.KindOther, Op: "transit encrypt", Detail: "the wrapped seed was not proven, so it is not returned: " + detail}
}

// prove decrypts every wrapped seed of the batch in one request and
// compares it with its seed in constant time; an item that fails gets an
// error in place of its ciphertext, and the encrypt path is marked
// failing.
func (p *Plugin) prove(ctx context.Context, items []encryptItem, outs []string, errs []error) error {
	var idx []int
	var cts []string
	var failure error
	for i, ct := range outs {
		if errs[i] != nil {
			continue
		}
		if v, err := transitkey.CiphertextVersion(ct); err != nil || v != items[i].version {
			outs[i], errs[i] = "", errNotProven(fmt.Sprintf("transit answered a ciphertext that is not of key version %d", items[i].version))
			failure = errs[i]
			continue
		}
		idx = append(idx, i)
		cts = append(cts, ct)
	}
	if len(cts) > 0 {
		pts, perrs, err := p.decryptBatch(ctx, cts)
		if err != nil {
			return fmt.Errorf("prove the wrapped seed: %w", err)
		}
		if len(pts) != len(cts) || len(perrs) != len(cts) {
			return errNotProven(fmt.Sprintf("%d decrypted seeds for %d wrapped", len(pts), len(cts)))
		}
		for j, i := range idx {
			pt, derr := base64.StdEncoding.DecodeString(pts[j])
			if perrs[j] != nil || derr != nil || subtle.ConstantTimeCompare(pt, items[i].plaintext) != 1 {
				outs[i], errs[i] = "", errNotProven("transit answered a ciphertext that does not decrypt to the seed it was sent")
				failure = errs[i]
			}
		}
	}
	if failure != nil {
		p.noteOutcome(pathEncrypt, failure)
		p.publishHealth()
	}
	return nil
}

// probe wraps and proves a random seed of its own under id's version, so
// that a failure of Encrypt or Decrypt leaves Status as soon as the path
// works again, not at kube-apiserver's next call.
func (p *Plugin) probe(ctx context.Context, id transitkey.KeyID) {
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return
	}
	_, _, _ = p.encryptBatch(ctx, []encryptItem{{version: id.Version, created: id.Created, plaintext: seed}})
}
