package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// TestVaultSecretAdmissionTenantGuards: the real API server, with the
// chart's CRDs, refuses the specs that would turn the controller against
// Vault's own endpoints, and expiryPolicy Retain for sources whose data is
// dead at expiry; each message names the field and the fix.
func TestVaultSecretAdmissionTenantGuards(t *testing.T) {
	t.Parallel()
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	cp.Namespace("app")
	c, err := client.New(cp.Config, client.Options{Scheme: runtime.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	create := func(name, spec string) error {
		manifest := fmt.Sprintf(`{apiVersion: secrets.vaultkms.io/v1alpha1, kind: VaultSecret, metadata: {name: %s, namespace: app},
  spec: {auth: {kubernetes: {role: app, serviceAccountName: app}}, %s}}`, name, spec)
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
			t.Fatalf("manifest: %v", err)
		}
		return c.Create(context.Background(), &obj)
	}
	const mountFix = "name the mount of a secrets engine"
	cases := []struct {
		name, spec string
		want       []string // empty: admitted
	}{
		{"kv-token-lookup", `source: {kv: {mount: auth/token, path: lookup-self}}`, []string{"spec.source.kv.mount", mountFix}},
		{"kv-auth", `source: {kv: {mount: auth, path: token/lookup-self}}`, []string{"spec.source.kv.mount", mountFix}},
		{"kv-auth-case", `source: {kv: {mount: Auth/token, path: lookup-self}}`, []string{"spec.source.kv.mount", mountFix}},
		{"kv-sys", `source: {kv: {mount: sys, path: wrapping/lookup}}`, []string{"spec.source.kv.mount", mountFix}},
		{"kv-slash-auth", `source: {kv: {mount: /auth/token, path: lookup-self}}`, []string{"spec.source.kv.mount"}},
		{"dynamic-token", `source: {dynamic: {mount: auth/token, path: lookup-self}}`, []string{"spec.source.dynamic.mount", mountFix}},
		{"dynamic-sys", `source: {dynamic: {mount: SYS/leases, path: lookup}}`, []string{"spec.source.dynamic.mount", mountFix}},
		{"pki-sys", `source: {pki: {mount: sys, role: r, commonName: c}}`, []string{"spec.source.pki.mount", mountFix}},
		{"dynamic-dotdot", `source: {dynamic: {mount: database, path: ../sys/x}}`, []string{"spec.source.dynamic.path"}},
		{"retain-dynamic", `source: {dynamic: {mount: database, path: creds/app}}, expiryPolicy: Retain`, []string{"spec.expiryPolicy", "Retain is only for kv", "Delete"}},
		{"retain-pki", `source: {pki: {mount: pki, role: r, commonName: c}}, expiryPolicy: Retain`, []string{"spec.expiryPolicy", "Retain is only for kv"}},
		{"policy-typo", `source: {kv: {mount: secret, path: a}}, expiryPolicy: Keep`, []string{"spec.expiryPolicy", `"Delete", "Retain"`}},
		// Admitted: look-alike names, and Retain for kv.
		{"kv-authors", `source: {kv: {mount: authors, path: a}}`, nil},
		{"kv-nested-sys", `source: {kv: {mount: team/sys, path: a}}`, nil},
		{"retain-kv", `source: {kv: {mount: secret, path: a}}, expiryPolicy: Retain`, nil},
		{"delete-dynamic", `source: {dynamic: {mount: database, path: creds/app}}, expiryPolicy: Delete`, nil},
	}
	for _, tc := range cases {
		err := create(tc.name, tc.spec)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: admitted; want a rejection naming %v", tc.name, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant it to contain %q", tc.name, err, w)
			}
		}
	}
}

// TestVaultSecretAudienceAllowlist: a VaultSecret naming an audience the
// administrator did not allow is InvalidSpec naming the field, and is not
// served; one naming an allowed audience is.
func TestVaultSecretAudienceAllowlist(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t, stackOptions{args: []string{"--allowed-audiences=vault,vault-eu"}})
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.role("app-eu", "app", "app-read", map[string]any{"audience": "vault-eu"})
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "pw-aud-1"}})
	for _, tc := range []struct{ name, role, audience string }{
		{"apiserver-audience", "app", "https://kubernetes.default.svc.cluster.local"},
		{"eu-audience", "app-eu", "vault-eu"},
	} {
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: `+tc.name+`, namespace: app}
spec:
  auth: {kubernetes: {role: `+tc.role+`, serviceAccountName: app, audiences: ["`+tc.audience+`"]}}
  source: {kv: {mount: secret, path: app/config}}
`); err != nil {
			t.Fatal(err)
		}
	}
	vs := s.waitReady(t, "app", "apiserver-audience", metav1.ConditionFalse, "InvalidSpec", 30*time.Second)
	if msg := meta.FindStatusCondition(vs.Status.Conditions, "Ready").Message; !strings.Contains(msg, "spec.auth.kubernetes.audiences[0]") || !strings.Contains(msg, "--allowed-audiences") {
		t.Fatalf("the condition does not name the field and the fix: %q", msg)
	}
	if _, err := s.secret("app", "apiserver-audience"); err == nil {
		t.Fatal("a Secret was written for a VaultSecret with a refused audience")
	}
	s.waitReady(t, "app", "eu-audience", metav1.ConditionTrue, "Synced", 30*time.Second)
}

// TestChartNamesTheServiceAccountItCreates: the controller's guard against
// VaultSecrets borrowing its own service account is given the name the
// chart really creates, whatever the release is called.
func TestChartNamesTheServiceAccountItCreates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		release string
		set     []string
	}{
		{"vaultkms", nil},
		{"team-a", nil},
		{"team-b", []string{"controller.serviceAccount.name=custom-sa"}},
	} {
		out, err := helmTemplate(t, tc.release, "vaultkms-system", append([]string{chartVaultAddr}, tc.set...)...)
		if err != nil {
			t.Fatal(err)
		}
		var sa, podSA, flag string
		for _, o := range renderedObjects(t, out) {
			switch o["kind"] {
			case "ServiceAccount":
				if strings.HasSuffix(objName(o), "controller") || objName(o) == "custom-sa" {
					sa = objName(o)
				}
			case "Deployment":
				if !strings.HasSuffix(objName(o), "-controller") {
					continue
				}
				spec := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
				podSA, _ = spec["serviceAccountName"].(string)
				for _, a := range spec["containers"].([]any)[0].(map[string]any)["args"].([]any) {
					if v, ok := strings.CutPrefix(a.(string), "--service-account-name="); ok {
						flag = v
					}
				}
			}
		}
		if sa == "" || podSA != sa || flag != sa {
			t.Errorf("release %s: ServiceAccount %q, pod runs as %q, --service-account-name=%q; want all three equal", tc.release, sa, podSA, flag)
		}
	}
}
