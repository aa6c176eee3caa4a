package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rotation"
)

func runRotate(ctx context.Context, args []string) error {
	c := newCommon("rotate")
	if err := c.parse(args); err != nil {
		return err
	}
	vc, err := c.vaultClient()
	if err != nil {
		return err
	}
	before, err := keysource.FromVault(ctx, vc, c.vaultNamespace, c.transitMount, c.transitKey)
	if err != nil {
		return err
	}
	path := c.transitMount + "/keys/" + c.transitKey + "/rotate"
	if _, err := vc.Logical().WriteWithContext(ctx, path, nil); err != nil {
		return fmt.Errorf("rotate transit key %q: %w", c.transitMount+"/"+c.transitKey, err)
	}
	after, err := keysource.FromVault(ctx, vc, c.vaultNamespace, c.transitMount, c.transitKey)
	if err != nil {
		return err
	}
	out := map[string]any{"previousKeyID": before.Current.String(), "currentKeyID": after.Current.String(), "version": after.LatestVersion}
	return emit(os.Stdout, c.output, out, func(w io.Writer) {
		fmt.Fprintf(w, "Rotated %s/%s: version %d -> %d\n", c.transitMount, c.transitKey, before.LatestVersion, after.LatestVersion)
		fmt.Fprintf(w, "new key_id:\t%s\n\n", after.Current.String())
		fmt.Fprintf(w, "The plugin picks the new version up within its refresh interval (10s), and each\n")
		fmt.Fprintf(w, "kube-apiserver at its next Status poll (about a minute). Follow it with:\n")
		fmt.Fprintf(w, "  kubectl vaultkms status --etcd-endpoints=... --transit-key=%s\n", c.transitKey)
		fmt.Fprintf(w, "then, once every API server reports the new key_id:\n")
		fmt.Fprintf(w, "  kubectl vaultkms reencrypt --etcd-endpoints=... --transit-key=%s\n", c.transitKey)
	})
}

func runTrim(ctx context.Context, args []string) error {
	c := newCommon("trim")
	to := c.fs.Int("to", 0, "min_decryption_version to set (default: the oldest version still in use)")
	dryRun := c.fs.Bool("dry-run", false, "say what would be done without changing Vault")
	if err := c.parse(args); err != nil {
		return err
	}
	vc, err := c.vaultClient()
	if err != nil {
		return err
	}
	tk, err := keysource.FromVault(ctx, vc, c.vaultNamespace, c.transitMount, c.transitKey)
	if err != nil {
		return err
	}
	keyID := tk.Current.String()
	rep, err := scanWith(ctx, c, keyID, nil)
	if err != nil {
		return err
	}
	facts := rotation.Facts{CurrentKeyID: keyID, MinDecryptionVersion: tk.MinDecryption, Plaintext: rep.Plaintext(), Stale: rep.Stale(), ByKeyID: rep.ByKeyID()}
	if keys, err := c.apiServerKeys(ctx); err == nil && len(keys) > 0 {
		facts.APIServersKnown = true
		facts.APIServersAgree, _ = keysource.Agreement(keys, c.provider, keyID)
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "warning: cannot read API server metrics: %v\n", err)
	}
	target := *to
	if target == 0 {
		target = rotation.Decide(facts).TrimTo
		if target == 0 {
			target = tk.LatestVersion
		}
	}
	if err := rotation.CheckTrim(facts, target); err != nil {
		return &exitErr{code: exitRefused, err: fmt.Errorf("trim refused: %w", err)}
	}
	if !*dryRun {
		path := c.transitMount + "/keys/" + c.transitKey + "/config"
		if _, err := vc.Logical().WriteWithContext(ctx, path, map[string]any{"min_decryption_version": target}); err != nil {
			return fmt.Errorf("set min_decryption_version on %q: %w", c.transitMount+"/"+c.transitKey, err)
		}
	}
	out := map[string]any{"from": max(1, tk.MinDecryption), "to": target, "dryRun": *dryRun, "revision": rep.Revision}
	return emit(os.Stdout, c.output, out, func(w io.Writer) {
		verb := "Raised"
		if *dryRun {
			verb = "Would raise"
		}
		fmt.Fprintf(w, "%s min_decryption_version of %s/%s from %d to %d: versions below %d can no longer decrypt.\n",
			verb, c.transitMount, c.transitKey, max(1, tk.MinDecryption), target, target)
	})
}
