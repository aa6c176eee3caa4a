package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const convertInput = `apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {name: vault, namespace: app}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      path: secret
      auth:
        kubernetes: {role: app, serviceAccountRef: {name: app, audiences: [vault]}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: app, namespace: app}
spec:
  secretStoreRef: {name: vault}
  data:
  - {secretKey: password, remoteRef: {key: app/config, property: password}}
`

func TestConvertCommand(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "in.yaml")
	if err := os.WriteFile(file, []byte(convertInput), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name           string
		args           []string
		stdin          string
		code           int
		stdout, stderr []string
		noStdout       bool
	}{
		{name: "a file", args: []string{"convert", "-f", file}, code: 0,
			stdout: []string{"kind: ClusterVaultConnection", "kind: VaultAuth", "kind: VaultSecret", "path: app/config"},
			stderr: []string{"ExternalSecret/app/app: spec.data: the Secret also holds every other key of secret/app/config", "converted 2 of the input's objects into 3"}},
		{name: "stdin, with --adopt", args: []string{"convert", "-f", "-", "--adopt"}, stdin: convertInput, code: 0,
			stdout: []string{"adopt: true"}},
		{name: "nothing convertible", args: []string{"convert", "-f", "-"}, stdin: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", code: exitRefused,
			stderr: []string{"ConfigMap/default/c: kind: v1 is neither", "nothing could be converted"}, noStdout: true},
		{name: "malformed YAML", args: []string{"convert", "-f", "-"}, stdin: convertInput + "---\nspec: [\n", code: exitError,
			stderr: []string{"stdin: document 3"}, noStdout: true},
		{name: "no -f", args: []string{"convert"}, code: exitUsage, stderr: []string{"-f is required"}, noStdout: true},
		{name: "a missing file", args: []string{"convert", "-f", filepath.Join(dir, "nope.yaml")}, code: exitError, stderr: []string{"nope.yaml"}, noStdout: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), streams{In: strings.NewReader(tc.stdin), Out: &out, ErrOut: &errb}, tc.args)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
			if tc.noStdout && out.Len() > 0 {
				t.Errorf("stdout should be empty:\n%s", out.String())
			}
		})
	}
}
