package transitkey

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// ErrKeyChanged says the key's latest version is no longer the one the
// checks before a trim were made for: someone rotated (or recreated) it
// meanwhile.
var ErrKeyChanged = errors.New("the transit key changed while the trim was checked")

// Trim is what RaiseMinDecryption found and did.
type Trim struct {
	// From is min_decryption_version as Vault held it just before the
	// write (at least 1, Vault's default).
	From int
	// Raised is false when From was already at least the version asked
	// for: nothing was written.
	Raised bool
}

// RaiseMinDecryption raises min_decryption_version of mount/key to `to`.
// The checks that allow a trim take minutes (an etcd scan) and were made
// on an earlier read of the key, and Transit has no compare-and-set: so
// the key is read again just before the write, the write is refused with
// ErrKeyChanged when its latest version is no longer `latest`, and it is
// never lowered (a higher value set by hand meanwhile is left alone).
func RaiseMinDecryption(ctx context.Context, client *api.Client, mount, key string, latest, to int) (Trim, error) {
	now, err := Read(ctx, client, mount, key)
	if err != nil {
		return Trim{}, err
	}
	t := Trim{From: max(1, now.MinDecryptionVersion)}
	if now.LatestVersion != latest {
		return t, fmt.Errorf("%w: its latest version is now %d, the checks were made for version %d", ErrKeyChanged, now.LatestVersion, latest)
	}
	if now.MinDecryptionVersion >= to {
		return t, nil
	}
	mount = NormalizeMount(mount)
	if _, err := client.Logical().WriteWithContext(ctx, mount+"/keys/"+key+"/config", map[string]any{"min_decryption_version": to}); err != nil {
		return t, vault.Wrap(fmt.Sprintf("configure transit key %q", mount+"/"+key), err)
	}
	t.Raised = true
	return t, nil
}
