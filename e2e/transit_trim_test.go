package e2e

import (
	"context"
	"errors"
	"testing"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/transitkey"
)

// TestRaiseMinDecryptionReadsTheKeyFirst runs the one write that retires
// key versions (the autopilot's trim and `kubectl vaultkms trim`) against a
// real Vault whose key changes by hand between the trim's checks and its
// write: it never lowers min_decryption_version, and never trims a key
// whose latest version moved.
func TestRaiseMinDecryptionReadsTheKeyFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	v.Write(mount+"/keys/"+key+"/rotate", nil)
	v.Write(mount+"/keys/"+key+"/rotate", nil) // latest 3, min 1
	c := v.Client()
	minNow := func() int {
		t.Helper()
		ki, err := transitkey.Read(ctx, c, mount, key)
		if err != nil {
			t.Fatal(err)
		}
		return ki.MinDecryptionVersion
	}

	done, err := transitkey.RaiseMinDecryption(ctx, c, mount, key, 3, 2)
	if err != nil || !done.Raised || done.From != 1 || minNow() != 2 {
		t.Fatalf("raise to 2: %+v %v, min %d", done, err, minNow())
	}
	// Run again (a retry after a lost answer): nothing to write.
	done, err = transitkey.RaiseMinDecryption(ctx, c, mount, key, 3, 2)
	if err != nil || done.Raised || done.From != 2 || minNow() != 2 {
		t.Fatalf("raise to 2 again: %+v %v, min %d", done, err, minNow())
	}
	// Raised to 3 by hand while a trim to 2 was being checked: left at 3.
	v.Write(mount+"/keys/"+key+"/config", map[string]any{"min_decryption_version": 3})
	done, err = transitkey.RaiseMinDecryption(ctx, c, mount, key, 3, 2)
	if err != nil || done.Raised || done.From != 3 || minNow() != 3 {
		t.Fatalf("raise to 2 over a hand trim to 3: %+v %v, min %d", done, err, minNow())
	}
	// Rotated by hand to 4 while a trim was checked for version 3:
	// refused, nothing written.
	v.Write(mount+"/keys/"+key+"/rotate", nil)
	done, err = transitkey.RaiseMinDecryption(ctx, c, mount, key, 3, 3)
	if !errors.Is(err, transitkey.ErrKeyChanged) || done.Raised || minNow() != 3 {
		t.Fatalf("trim checked for version 3 after a rotation to 4: %+v %v, min %d", done, err, minNow())
	}
	// A key Vault does not have: its error, named.
	if _, err := transitkey.RaiseMinDecryption(ctx, c, mount, "missing", 1, 1); err == nil {
		t.Fatal("no error for a missing key")
	}
}
