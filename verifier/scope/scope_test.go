package scope

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/vaultkms/vaultkms/verifier/scan"
)

const config = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, configmaps]
    providers:
      - kms: {apiVersion: v2, name: vault, endpoint: unix:///run/vaultkms/kms.sock}
      - identity: {}
  - resources: ["*.apps"]
    providers:
      - kms: {apiVersion: v2, name: vault, endpoint: unix:///run/vaultkms/kms.sock}
  - resources: ["*.*"]
    providers:
      - kms: {apiVersion: v2, name: wildonly, endpoint: unix:///run/other.sock}
`

func TestResolve(t *testing.T) {
	path := filepath.Join(t.TempDir(), "enc.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		f        Flags
		want     []scan.Resource
		wantWild []string
		wantErr  string
	}{
		{name: "nothing given: secrets", f: Flags{Provider: "vault"}, want: []scan.Resource{"secrets"}},
		{name: "--resources wins over the configuration", f: Flags{Resources: "configmaps, widgets.example.com", EncryptionConfig: path, Provider: "vault"},
			want: []scan.Resource{"configmaps", "widgets.example.com"}},
		{name: "--resources with a wildcard", f: Flags{Resources: "*.apps"}, wantErr: `--resources: "*.apps"`},
		{name: "what the configuration encrypts, wildcards apart", f: Flags{EncryptionConfig: path, Provider: "vault"},
			want: []scan.Resource{"secrets", "configmaps"}, wantWild: []string{"*.apps"}},
		// A provider named differently in the file would otherwise scan
		// nothing and prove nothing.
		{name: "provider not in the configuration", f: Flags{EncryptionConfig: path, Provider: "vaultkms"}, wantErr: `lists no resource by name under --provider "vaultkms"`},
		{name: "provider with wildcards only", f: Flags{EncryptionConfig: path, Provider: "wildonly"}, wantWild: []string{"*.*"}, wantErr: "lists no resource by name"},
		{name: "missing configuration", f: Flags{EncryptionConfig: path + ".missing", Provider: "vault"}, wantErr: "--encryption-config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, wild, err := tc.f.Resolve()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) || !reflect.DeepEqual(wild, tc.wantWild) {
				t.Errorf("got %v wildcards %v, want %v wildcards %v", got, wild, tc.want, tc.wantWild)
			}
		})
	}
}

// Both libraries the programs parse with define the same flags.
func TestBind(t *testing.T) {
	args := []string{"--resources=secrets", "--encryption-config=/etc/enc.yaml", "--provider=kms"}
	want := Flags{Resources: "secrets", EncryptionConfig: "/etc/enc.yaml", Provider: "kms"}
	var a, b Flags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	a.Bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	pfs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	b.Bind(pfs)
	if err := pfs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if a != want || b != want {
		t.Errorf("flag %+v, pflag %+v, want %+v", a, b, want)
	}
	var d Flags
	d.Bind(flag.NewFlagSet("t", flag.ContinueOnError))
	if d.Provider != "vault" {
		t.Errorf("default provider %q, want vault", d.Provider)
	}
}
