package keysource

import (
	"errors"
	"fmt"

	"github.com/vaultkms/vaultkms/internal/transitkey"
)

// FlagSet is what the standard library's flag.FlagSet and spf13/pflag's
// FlagSet have in common, so the auditor (flag) and kubectl-vaultkms
// (pflag) define the key_id flags in one place and cannot drift apart.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
}

// Flags say where the current key_id comes from: a fixed value, the
// plugin's Status, or the Transit key in Vault.
type Flags struct {
	KMSSocket, CurrentKeyID                string
	VaultAddr, VaultCACert, VaultNamespace string
	TransitMount, TransitKey               string
	VaultTokenFile                         string
}

// Env is where unset Vault flags take their defaults from. An operator's
// shell (kubectl-vaultkms) passes os.Getenv, as the vault CLI reads
// VAULT_ADDR and friends; a long-running program (the auditor) passes
// nil, so a variable left in a pod's environment never changes which
// Vault it trusts.
type Env func(string) string

// Bind defines --kms-socket, --current-key-id, --vault-addr,
// --vault-ca-cert, --vault-namespace, --transit-mount, --transit-key and
// --vault-token-file on fs. tokenFileUsage says whose token the file holds
// and what else is tried without it.
func (f *Flags) Bind(fs FlagSet, env Env, tokenFileUsage string) {
	fromEnv := func(name, usage string) (string, string) {
		if env == nil {
			return "", usage + "; VAULT_* variables are ignored"
		}
		return env(name), usage + " (default $" + name + ")"
	}
	fs.StringVar(&f.KMSSocket, "kms-socket", "", "the plugin's socket (a path or unix:///path); its Status gives the current key_id")
	fs.StringVar(&f.CurrentKeyID, "current-key-id", "", "take this key_id as current instead of asking the plugin or Vault")
	v, u := fromEnv("VAULT_ADDR", "Vault address, to read the current key_id from the Transit key")
	fs.StringVar(&f.VaultAddr, "vault-addr", v, u)
	v, u = fromEnv("VAULT_CACERT", "CA of Vault's serving certificate")
	fs.StringVar(&f.VaultCACert, "vault-ca-cert", v, u)
	v, u = fromEnv("VAULT_NAMESPACE", "Vault namespace (Vault Enterprise)")
	fs.StringVar(&f.VaultNamespace, "vault-namespace", v, u)
	fs.StringVar(&f.TransitMount, "transit-mount", "transit", "mount path of the Transit engine the plugin uses")
	fs.StringVar(&f.TransitKey, "transit-key", "", "name of the Transit key the plugin uses")
	fs.StringVar(&f.VaultTokenFile, "vault-token-file", "", tokenFileUsage)
}

// Check checks the flags as parsed, before anything is asked, and puts the
// Transit mount in the one form key_ids and Vault paths use ("transit/"
// would otherwise build "transit//keys/...").
func (f *Flags) Check() error {
	f.TransitMount = transitkey.NormalizeMount(f.TransitMount)
	if f.TransitMount == "" {
		return errors.New("--transit-mount is empty: give the Transit engine's mount path, such as transit")
	}
	if f.KMSSocket != "" {
		if _, err := SocketPath(f.KMSSocket); err != nil {
			return err
		}
	}
	if f.TransitKey == "" {
		return nil
	}
	if f.VaultAddr == "" && f.KMSSocket == "" && f.CurrentKeyID == "" {
		return fmt.Errorf("--transit-key %q needs --vault-addr, to read the key from Vault", f.TransitKey)
	}
	return nil
}

// FromVaultWanted says whether the flags ask for the key_id from Vault.
func (f *Flags) FromVaultWanted() bool { return f.TransitKey != "" && f.VaultAddr != "" }
