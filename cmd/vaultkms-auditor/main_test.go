package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What the auditor is told at start must be complete: an error then, naming
// the flag, rather than a running auditor whose every scan fails or proves
// nothing.
func TestStartupChecks(t *testing.T) {
	enc := filepath.Join(t.TempDir(), "enc.yaml")
	if err := os.WriteFile(enc, []byte(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, "*.apps"]
    providers:
      - kms: {apiVersion: v2, name: vault, endpoint: unix:///run/vaultkms/kms.sock}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "socket", args: []string{"--kms-socket=unix:///run/vaultkms/kms.sock"}},
		{name: "Vault with a token file", args: []string{"--transit-key=k", "--vault-addr=https://127.0.0.1:1", "--vault-token-file=/t"}},
		{name: "no key source", wantErr: "needs the current key_id"},
		{name: "Vault without a token file", args: []string{"--transit-key=k", "--vault-addr=https://127.0.0.1:1"}, wantErr: `--transit-key "k" needs --vault-token-file`},
		{name: "transit key without Vault", args: []string{"--transit-key=k"}, wantErr: "needs --vault-addr"},
		{name: "relative socket", args: []string{"--kms-socket=kms.sock"}, wantErr: "--kms-socket"},
		{name: "wildcards in the EncryptionConfiguration", args: []string{"--current-key-id=x", "--encryption-config=" + enc}, wantErr: "wildcard entries [*.apps]"},
		{name: "provider not in the EncryptionConfiguration", args: []string{"--current-key-id=x", "--encryption-config=" + enc, "--provider=kms"}, wantErr: `under --provider "kms"`},
		{name: "resources named", args: []string{"--current-key-id=x", "--encryption-config=" + enc, "--resources=secrets"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The environment is never a default of the auditor's flags.
			t.Setenv("VAULT_ADDR", "https://from-env:8200")
			var o options
			fs := flag.NewFlagSet("vaultkms-auditor", flag.ContinueOnError)
			bindFlags(fs, &o, func(string) string { return "" })
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			_, err := resourceNames(o)
			if err == nil {
				_, err = keySource(o)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
