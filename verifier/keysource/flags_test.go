package keysource

import (
	"flag"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// The auditor (flag, no environment) and kubectl-vaultkms (pflag, the
// operator's VAULT_* variables) bind the same flags; the same arguments
// must give the same Flags, and only kubectl-vaultkms reads VAULT_*.
func TestFlagsBind(t *testing.T) {
	env := map[string]string{"VAULT_ADDR": "https://env:8200", "VAULT_CACERT": "/env/ca.crt", "VAULT_NAMESPACE": "env-ns"}
	getenv := func(k string) string { return env[k] }
	parse := map[string]func(Env, []string) (Flags, error){
		"flag": func(e Env, args []string) (Flags, error) {
			var f Flags
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			f.Bind(fs, e, "token")
			return f, fs.Parse(args)
		},
		"pflag": func(e Env, args []string) (Flags, error) {
			var f Flags
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			f.Bind(fs, e, "token")
			return f, fs.Parse(args)
		},
	}
	all := []string{"--kms-socket=unix:///run/k.sock", "--current-key-id=id", "--vault-addr=https://v:8200", "--vault-ca-cert=ca",
		"--vault-namespace=ns", "--transit-mount=tr", "--transit-key=k", "--vault-token-file=tok"}
	for _, tc := range []struct {
		name string
		env  Env
		args []string
		want Flags
	}{
		{name: "defaults without the environment", want: Flags{TransitMount: "transit"}},
		{name: "defaults from the environment", env: getenv,
			want: Flags{TransitMount: "transit", VaultAddr: "https://env:8200", VaultCACert: "/env/ca.crt", VaultNamespace: "env-ns"}},
		{name: "flags win over the environment", env: getenv, args: all,
			want: Flags{KMSSocket: "unix:///run/k.sock", CurrentKeyID: "id", VaultAddr: "https://v:8200", VaultCACert: "ca", VaultNamespace: "ns",
				TransitMount: "tr", TransitKey: "k", VaultTokenFile: "tok"}},
	} {
		for name, p := range parse {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				got, err := p(tc.env, tc.args)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("got %+v, want %+v", got, tc.want)
				}
			})
		}
	}
}

func TestFlagsCheck(t *testing.T) {
	for _, tc := range []struct {
		name      string
		f         Flags
		wantErr   string
		wantMount string
	}{
		{name: "nothing given: the caller says what is missing", f: Flags{TransitMount: "transit"}, wantMount: "transit"},
		{name: "mount spelled with slashes", f: Flags{TransitMount: "/kms/transit/", TransitKey: "k", VaultAddr: "https://v"}, wantMount: "kms/transit"},
		{name: "empty mount", f: Flags{TransitMount: "/"}, wantErr: "--transit-mount is empty"},
		{name: "relative socket", f: Flags{TransitMount: "transit", KMSSocket: "kms.sock"}, wantErr: `--kms-socket "kms.sock"`},
		{name: "socket as the EncryptionConfiguration writes it", f: Flags{TransitMount: "transit", KMSSocket: "unix:///run/kms.sock"}, wantMount: "transit"},
		{name: "transit key with nowhere to read it", f: Flags{TransitMount: "transit", TransitKey: "k"}, wantErr: `--transit-key "k" needs --vault-addr`},
		{name: "transit key beside the plugin", f: Flags{TransitMount: "transit", TransitKey: "k", KMSSocket: "/run/kms.sock"}, wantMount: "transit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			err := f.Check()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.TransitMount != tc.wantMount {
				t.Errorf("mount %q, want %q", f.TransitMount, tc.wantMount)
			}
		})
	}
}
