package encconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "enc.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const cfg = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: vault, endpoint: unix:///run/vaultkms/kms.sock}
      - identity: {}
  - resources: [configmaps]
    providers:
      - identity: {}
      - kms: {apiVersion: v2, name: vault, endpoint: unix:///run/vaultkms/kms.sock}
  - resources: ["*.example.com"]
    providers:
      - aescbc: {keys: [{name: k1, secret: c2VjcmV0}]}
      - kms: {name: old, endpoint: unix:///x}
`

func TestCheck(t *testing.T) {
	got, err := Check(write(t, cfg), "vault", []string{"secrets", "configmaps", "widgets.example.com", "events"})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		providers string
		encrypted bool
		problem   string
	}{
		{"kms:v2:vault,identity", true, ""},
		{"identity,kms:v2:vault", false, "identity is first"},
		{"aescbc,kms:v1:old", true, "KMS v1"},
		{"", false, "not listed"},
	}
	for i, w := range want {
		r := got[i]
		if strings.Join(r.Providers, ",") != w.providers || r.Encrypted != w.encrypted || (w.problem == "") != (len(r.Problems) == 0) ||
			(w.problem != "" && !strings.Contains(strings.Join(r.Problems, ";"), w.problem)) {
			t.Errorf("%s: %+v, want %+v", r.Resource, r, w)
		}
	}
}

func TestCheckRejectsOtherFiles(t *testing.T) {
	if _, err := Check(write(t, "kind: Pod\n"), "vault", []string{"secrets"}); err == nil || !strings.Contains(err.Error(), "EncryptionConfiguration") {
		t.Fatalf("err = %v", err)
	}
}

func TestEncrypted(t *testing.T) {
	const c = cfg + `  - resources: ["deployments.apps", "*.*"]
    providers:
      - kms: {apiVersion: v2, name: vault, endpoint: unix:///run/vaultkms/kms.sock}
`
	names, wild, err := Encrypted(write(t, c), "vault")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "secrets,configmaps,deployments.apps" || strings.Join(wild, ",") != "*.*" {
		t.Fatalf("Encrypted = %v, wildcards %v", names, wild)
	}
}
