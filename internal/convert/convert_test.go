package convert

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// converted is the output of one conversion, decoded back strictly into
// the API's Go types: a field name the API does not have fails the test.
type converted struct {
	yaml     string
	warnings string
	count    int
	conns    map[string]v1alpha1.ClusterVaultConnection
	auths    map[string]v1alpha1.VaultAuth
	secrets  map[string]v1alpha1.VaultSecret
}

func run(t *testing.T, input string, opts Options) converted {
	t.Helper()
	res, err := Convert(strings.NewReader(input), opts)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	var out bytes.Buffer
	if err := WriteYAML(&out, res.Objects); err != nil {
		t.Fatal(err)
	}
	var ws []string
	for _, w := range res.Warnings {
		ws = append(ws, w.String())
	}
	c := converted{yaml: out.String(), warnings: strings.Join(ws, "\n"), count: res.Converted,
		conns: map[string]v1alpha1.ClusterVaultConnection{}, auths: map[string]v1alpha1.VaultAuth{}, secrets: map[string]v1alpha1.VaultSecret{}}
	for _, doc := range strings.Split(out.String(), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var tm struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		var err error
		switch tm.Kind {
		case "ClusterVaultConnection":
			var o v1alpha1.ClusterVaultConnection
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			c.conns[o.Name] = o
		case "VaultAuth":
			var o v1alpha1.VaultAuth
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			c.auths[o.Namespace+"/"+o.Name] = o
		case "VaultSecret":
			var o v1alpha1.VaultSecret
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			c.secrets[o.Namespace+"/"+o.Name] = o
		default:
			t.Fatalf("unexpected kind %q in output:\n%s", tm.Kind, doc)
		}
		if err != nil {
			t.Fatalf("output does not decode strictly into the API types: %v\n%s", err, doc)
		}
		if !strings.Contains(doc, "apiVersion: secrets.vaultkms.io/v1alpha1") {
			t.Fatalf("output without the vaultkms apiVersion:\n%s", doc)
		}
	}
	return c
}

func TestRefreshAndTTL(t *testing.T) {
	cases := []struct {
		in, refresh, ttl time.Duration
		note             bool
	}{
		{30 * time.Second, 30 * time.Second, 90 * time.Second, false},
		{time.Hour, time.Hour, 3 * time.Hour, false},
		{5 * time.Second, 5 * time.Second, 15 * time.Second, false},
		{time.Second, 5 * time.Second, 15 * time.Second, true},
		{4000 * time.Hour, 4000 * time.Hour, 8760 * time.Hour, false},
		{9000 * time.Hour, 2920 * time.Hour, 8760 * time.Hour, true},
	}
	for _, tc := range cases {
		ri, ttl, note := refreshAndTTL(tc.in)
		if ri.Duration != tc.refresh || ttl.Duration != tc.ttl || (note != "") != tc.note {
			t.Errorf("refreshAndTTL(%s) = %s, %s, %q; want %s, %s, note %v", tc.in, ri.Duration, ttl.Duration, note, tc.refresh, tc.ttl, tc.note)
		}
		if ri.Duration >= ttl.Duration || ttl.Duration < minTTL || ttl.Duration > maxTTL {
			t.Errorf("refreshAndTTL(%s): %s and %s break the CRD's rules", tc.in, ri.Duration, ttl.Duration)
		}
	}
}

func TestMalformedInput(t *testing.T) {
	cases := []struct{ name, input, want string }{
		{"bad YAML in the second document", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n", "document 2"},
		{"no kind", "apiVersion: v1\nmetadata: {name: a}\n", "document 1: no apiVersion or kind"},
		{"no name", "apiVersion: secrets.hashicorp.com/v1beta1\nkind: VaultAuth\nmetadata: {namespace: a}\n", "document 1: VaultAuth has no metadata.name"},
		{"a List", "apiVersion: v1\nkind: List\nitems: []\n", "document 1: a List"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Convert(strings.NewReader(tc.input), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Nothing convertible: every object is named, none produces output.
func TestNothingConverted(t *testing.T) {
	cases := []struct{ name, input, want string }{
		{"a Deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: app}\nspec: {}\n",
			"Deployment/app/web: kind: apps/v1 is neither"},
		{"HCP Vault Secrets", "apiVersion: secrets.hashicorp.com/v1beta1\nkind: HCPVaultSecretsApp\nmetadata: {name: h, namespace: app}\nspec: {appName: x}\n",
			"HCPVaultSecretsApp/app/h: kind: HCP Vault Secrets has no equivalent"},
		{"PushSecret", "apiVersion: external-secrets.io/v1alpha1\nkind: PushSecret\nmetadata: {name: p, namespace: app}\nspec: {}\n",
			"PushSecret/app/p: apiVersion"},
		{"PushSecret v1", "apiVersion: external-secrets.io/v1\nkind: PushSecret\nmetadata: {name: p, namespace: app}\nspec: {selector: {}}\n",
			"PushSecret/app/p: kind: no equivalent"},
		{"a generator", "apiVersion: generators.external-secrets.io/v1alpha1\nkind: Password\nmetadata: {name: pw, namespace: app}\nspec: {length: 32}\n",
			"Password/app/pw: kind: generators have no equivalent"},
		{"aws login", "apiVersion: secrets.hashicorp.com/v1beta1\nkind: VaultAuth\nmetadata: {name: a, namespace: app}\nspec: {method: aws, mount: aws, aws: {role: r}}\n",
			"VaultAuth/app/a: spec.method: aws: no equivalent"},
		{"a store of another provider", "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {name: s, namespace: app}\nspec: {provider: {aws: {service: SecretsManager}}}\n",
			"SecretStore/app/s: spec.provider: aws: only the vault provider"},
		{"ExternalSecret without its store", "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: e, namespace: app}\nspec: {secretStoreRef: {name: vault}, data: [{secretKey: a, remoteRef: {key: k, property: a}}]}\n",
			"ExternalSecret/app/e: spec.secretStoreRef: SecretStore vault is not in the input"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := run(t, tc.input, Options{})
			if c.count != 0 || c.yaml != "" {
				t.Fatalf("converted %d objects:\n%s", c.count, c.yaml)
			}
			if !strings.Contains(c.warnings, tc.want) {
				t.Fatalf("warnings:\n%s\nwant a line containing %q", c.warnings, tc.want)
			}
		})
	}
}

// The output is the same whatever the order of the input's documents.
func TestDeterministicOrder(t *testing.T) {
	docs := strings.Split(strings.TrimSpace(vsoFull), "\n---\n")
	forward := run(t, strings.Join(docs, "\n---\n"), Options{})
	for i, j := 0, len(docs)-1; i < j; i, j = i+1, j-1 {
		docs[i], docs[j] = docs[j], docs[i]
	}
	backward := run(t, strings.Join(docs, "\n---\n"), Options{})
	if forward.yaml != backward.yaml || forward.warnings != backward.warnings {
		t.Fatalf("input order changed the output:\n%s\n--- vs ---\n%s", forward.yaml, backward.yaml)
	}
	kinds := []string{}
	for _, line := range strings.Split(forward.yaml, "\n") {
		if strings.HasPrefix(line, "kind: ") {
			kinds = append(kinds, strings.TrimPrefix(line, "kind: "))
		}
	}
	if got := strings.Join(kinds, ","); got != "ClusterVaultConnection,VaultAuth,VaultAuth,VaultSecret,VaultSecret,VaultSecret" {
		t.Fatalf("apply order %s: connections, then VaultAuths, then VaultSecrets", got)
	}
}

// Adopt is set only when asked for.
func TestAdopt(t *testing.T) {
	for _, adopt := range []bool{false, true} {
		c := run(t, vsoFull, Options{Adopt: adopt})
		for k, vs := range c.secrets {
			if vs.Spec.Target.Adopt != adopt {
				t.Fatalf("--adopt=%v: %s has target.adopt %v", adopt, k, vs.Spec.Target.Adopt)
			}
		}
		if strings.Contains(c.yaml, "adopt") != adopt {
			t.Fatalf("--adopt=%v: output mentions adopt: %v", adopt, !adopt)
		}
	}
}

// An unknown field is named, and the object still converted.
func TestUnknownField(t *testing.T) {
	c := run(t, `
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultStaticSecret
metadata: {name: s, namespace: app}
spec:
  vaultAuthRef: a
  type: kv-v2
  mount: secret
  path: p
  futureField: 1
  destination: {name: s, create: true, futureToo: x}
`, Options{})
	if c.count != 1 || len(c.secrets) != 1 {
		t.Fatalf("not converted: %s", c.warnings)
	}
	for _, f := range []string{"VaultStaticSecret/app/s: spec.futureField: unknown field", "VaultStaticSecret/app/s: spec.destination.futureToo: unknown field"} {
		if !strings.Contains(c.warnings, f) {
			t.Errorf("warnings:\n%s\nwant %q", c.warnings, f)
		}
	}
}
