package syncer

import (
	"strings"
	"testing"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func TestCheckVaultPathsRefusesVaultsOwnEndpoints(t *testing.T) {
	cases := []struct {
		name string
		src  v1alpha1.Source
		want string // empty: accepted
	}{
		{"kv secret", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}}, ""},
		{"kv nested mount", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "team/kv", Path: "a"}}, ""},
		{"kv mount named like auth", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "authors", Path: "a"}}, ""},
		{"kv token lookup", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "auth/token", Path: "lookup-self"}}, "spec.source.kv.mount"},
		{"kv auth alone", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "auth", Path: "token/lookup-self"}}, "spec.source.kv.mount"},
		{"kv leading slash", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "/auth/token", Path: "lookup-self"}}, "spec.source.kv.mount"},
		{"kv other case", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "Auth/token", Path: "lookup-self"}}, "spec.source.kv.mount"},
		{"kv sys", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "SYS", Path: "wrapping/lookup"}}, "spec.source.kv.mount"},
		{"kv dotdot mount", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret/../sys", Path: "a"}}, "spec.source.kv.mount"},
		{"kv dotdot path", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "a/../../sys/x"}}, "spec.source.kv.path"},
		{"kv absolute path", v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "/sys/x"}}, "spec.source.kv.path"},
		{"dynamic database", v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "database", Path: "creds/app"}}, ""},
		{"dynamic token", v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "auth/token", Path: "lookup-self"}}, "spec.source.dynamic.mount"},
		{"dynamic sys", v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "sys", Path: "leases/lookup"}}, "spec.source.dynamic.mount"},
		{"dynamic dot path", v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "database", Path: "./creds"}}, "spec.source.dynamic.path"},
		{"pki", v1alpha1.Source{PKI: &v1alpha1.PKISource{Mount: "pki", Role: "web"}}, ""},
		{"pki under sys", v1alpha1.Source{PKI: &v1alpha1.PKISource{Mount: "sys/pki", Role: "web"}}, "spec.source.pki.mount"},
		{"pki dotdot role", v1alpha1.Source{PKI: &v1alpha1.PKISource{Mount: "pki", Role: ".."}}, "spec.source.pki.role"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkVaultPaths(tc.src)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error starting with %q", err, tc.want)
			}
		})
	}
}

func TestCheckAudiencesAllowlist(t *testing.T) {
	allowed := []string{"vault", "vault-eu"}
	cases := []struct {
		name      string
		requested []string
		want      string
	}{
		{"none: the default", nil, ""},
		{"allowed", []string{"vault-eu"}, ""},
		{"the API server's", []string{"vault", "https://kubernetes.default.svc"}, "spec.auth.kubernetes.audiences[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkAudiences(tc.requested, allowed)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), "--allowed-audiences")):
				t.Fatalf("got %v, want an error starting with %q naming the flag", err, tc.want)
			}
		})
	}
}
