package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/apiservers"
	"github.com/vaultkms/vaultkms/verifier/gates"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rotation"
)

// unfinished tells whether the Transit key still has versions below its
// latest that can decrypt: the previous rotation was not trimmed.
func unfinished(tk keysource.TransitKey) error {
	if tk.LatestVersion > max(1, tk.MinDecryption) {
		return fmt.Errorf("the rotation to version %d is unfinished: versions %d..%d still decrypt (min_decryption_version %d); finish it with `kubectl vaultkms reencrypt` and `kubectl vaultkms trim`, or pass --force",
			tk.LatestVersion, max(1, tk.MinDecryption), tk.LatestVersion-1, max(1, tk.MinDecryption))
	}
	return nil
}

func runRotate(ctx context.Context, ios streams, args []string) error {
	c := newCommon("rotate", ios)
	force := c.fs.Bool("force", false, "rotate even though the previous rotation was not finished (trimmed)")
	if err := c.parse(args); err != nil {
		return err
	}
	vc, err := c.vaultClient()
	if err != nil {
		return err
	}
	before, err := keysource.FromVault(ctx, vc, c.key.VaultNamespace, c.key.TransitMount, c.key.TransitKey)
	if err != nil {
		return err
	}
	if err := unfinished(before); err != nil && !*force {
		return refused("rotate refused: %v", err)
	}
	path := c.key.TransitMount + "/keys/" + c.key.TransitKey + "/rotate"
	if _, err := vc.Logical().WriteWithContext(ctx, path, nil); err != nil {
		return fmt.Errorf("rotate transit key %q: %w", c.key.TransitMount+"/"+c.key.TransitKey, err)
	}
	after, err := keysource.FromVault(ctx, vc, c.key.VaultNamespace, c.key.TransitMount, c.key.TransitKey)
	if err != nil {
		return err
	}
	out := map[string]any{"previousKeyID": before.Current.String(), "currentKeyID": after.Current.String(), "version": after.LatestVersion}
	return emit(ios.Out, c.output, out, func(w io.Writer) {
		fmt.Fprintf(w, "Rotated %s/%s: version %d -> %d\n", c.key.TransitMount, c.key.TransitKey, before.LatestVersion, after.LatestVersion)
		fmt.Fprintf(w, "new key_id:\t%s\n\n", after.Current.String())
		fmt.Fprintf(w, "The plugin picks the new version up within its refresh interval (10s), and each\n")
		fmt.Fprintf(w, "kube-apiserver at its next Status poll (about a minute). Follow it with:\n")
		fmt.Fprintf(w, "  kubectl vaultkms status --etcd-endpoints=... --transit-key=%s\n", c.key.TransitKey)
		fmt.Fprintf(w, "then, once every API server reports the new key_id:\n")
		fmt.Fprintf(w, "  kubectl vaultkms reencrypt --etcd-endpoints=... --transit-key=%s\n", c.key.TransitKey)
	})
}

type trimReport struct {
	From       int                 `json:"from"`
	To         int                 `json:"to"`
	DryRun     bool                `json:"dryRun"`
	Revision   int64               `json:"revision"`
	Evidence   rotation.Evidence   `json:"evidence"`
	APIServers []apiservers.Server `json:"apiServers"`
	Undo       string              `json:"undo"`
}

// testOnlySettleFlag replaces --settle-time without its minimum, for the
// e2e tests.
const testOnlySettleFlag = "test-only-settle-time"

// runTrim raises min_decryption_version only on proof: every API server
// has reported the current key_id for the settle time (checked before and
// after the scan), and a scan of the whole etcd prefix finds no KMS v2
// value of this key below the target version, whatever its resource.
func runTrim(ctx context.Context, ios streams, args []string) error {
	c := newCommon("trim", ios)
	to := c.fs.Int("to", 0, "min_decryption_version to set (default: the latest version)")
	dryRun := c.fs.Bool("dry-run", false, "check every gate and say what would be done without changing Vault")
	settle := c.fs.Duration("settle-time", apiservers.DefaultSettle, fmt.Sprintf("how long every API server must have reported the current key_id before the scan (at least %s)", apiservers.MinSettle))
	// The e2e tests cannot wait minutes per trim; this hidden flag is
	// theirs alone, and its name says so. Users get --settle-time and its
	// minimum.
	testSettle := c.fs.Duration(testOnlySettleFlag, 0, "for the project's tests only: a settle time below the minimum")
	_ = c.fs.MarkHidden(testOnlySettleFlag)
	if err := c.parse(args); err != nil {
		return err
	}
	if *testSettle > 0 {
		*settle = *testSettle
	} else if err := apiservers.CheckSettle("--settle-time", *settle); err != nil {
		return usageErr("%v", err)
	}
	if c.noAPIServerMetrics {
		return usageErr("trim never skips the API server gate: drop --no-apiserver-metrics")
	}
	if c.scope.Resources != "" {
		c.warnf("trim scans every resource under --etcd-prefix; --resources is ignored")
	}
	vc, err := c.vaultClient()
	if err != nil {
		return err
	}
	tk, err := keysource.FromVault(ctx, vc, c.key.VaultNamespace, c.key.TransitMount, c.key.TransitKey)
	if err != nil {
		return err
	}
	target := *to
	if target == 0 {
		target = tk.LatestVersion
	}
	g, err := c.gates(ctx)
	if err != nil {
		return err
	}
	defer g.close()
	proof, err := g.Trim(ctx, tk, target, *settle, c.allowNoEvidence)
	if rotation.GateOf(err) != "" {
		return refused("trim refused: %v", err)
	}
	if err != nil {
		return err
	}
	ev, after := proof.Evidence, proof.APIServers
	from, raised := max(1, tk.MinDecryption), false
	if !*dryRun {
		done, err := transitkey.RaiseMinDecryption(ctx, vc, c.key.TransitMount, c.key.TransitKey, tk.LatestVersion, target)
		if errors.Is(err, transitkey.ErrKeyChanged) {
			return refused("trim refused: %v; nothing was written: check the key with `kubectl vaultkms status` and run trim again", err)
		}
		if err != nil {
			return fmt.Errorf("set min_decryption_version on %q: %w", c.key.TransitMount+"/"+c.key.TransitKey, err)
		}
		from, raised = done.From, done.Raised
	}
	out := trimReport{From: from, To: target, DryRun: *dryRun, Revision: proof.Revision, Evidence: ev, APIServers: after,
		Undo: fmt.Sprintf("vault write %s/keys/%s/config min_decryption_version=%d", c.key.TransitMount, c.key.TransitKey, from)}
	if !*dryRun && !raised {
		// Raised to target or beyond by someone else while the gates ran.
		out.To, out.Undo = from, ""
	}
	return emit(ios.Out, c.output, out, func(w io.Writer) {
		if !*dryRun && !raised {
			fmt.Fprintf(w, "min_decryption_version of %s/%s is already %d (at least %d): nothing written.\n", c.key.TransitMount, c.key.TransitKey, from, target)
			return
		}
		verb := "Raised"
		if *dryRun {
			verb = "Would raise"
		}
		fmt.Fprintf(w, "%s min_decryption_version of %s/%s from %d to %d: versions below %d can no longer decrypt.\n",
			verb, c.key.TransitMount, c.key.TransitKey, from, target, target)
		fmt.Fprintf(w, "Proof: %d API servers on the current key_id for at least %s; %d keys scanned under %s at revision %d, %d values under this key, none below version %d.\n",
			len(after), *settle, ev.Total, c.etcd.Prefix, proof.Revision, ev.Found(), target)
		fmt.Fprintf(w, "Undo (the key versions still exist in Vault):\n  %s\n", out.Undo)
		fmt.Fprintf(w, "Warning: etcd backups taken before the re-encryption may hold values under versions below %d;\nrestoring one needs this undo first.\n", target)
	})
}

// cliGates are the shared gates (verifier/gates) over the CLI's etcd,
// kubeconfig and API server list, with progress on stderr.
type cliGates struct {
	*gates.Gates
	close func()
}

func (c *common) gates(ctx context.Context) (*cliGates, error) {
	cli, err := c.dialEtcd(ctx)
	if err != nil {
		return nil, err
	}
	p := newProgress(c.ios.ErrOut, "scanning", 0)
	return &cliGates{
		Gates: &gates.Gates{KV: cli, Prefix: c.etcd.Prefix, Provider: c.scope.Provider, Reports: c.apiServerReports,
			Progress: func(res string, n int) { p.set("scanning "+res, n) }},
		close: func() { p.done(); cli.Close() },
	}, nil
}
