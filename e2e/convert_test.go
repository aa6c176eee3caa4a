package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestConvert: `kubectl vaultkms convert` turns a Vault Secrets Operator
// manifest and an External Secrets Operator manifest (written as those
// projects document them) into vaultkms objects that the real API server
// accepts (CRD schema and CEL rules), and that the controller syncs into
// Secrets holding what Vault holds, following a change in Vault.
func TestConvert(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	ctx := context.Background()
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "convert-first-4e1a", "user": "svc"}})
	// The CA both peers name, as a Secret of the application's namespace.
	if _, err := s.cp.Client.CoreV1().Secrets("app").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "vault-ca"},
		Data: map[string][]byte{"ca.crt": s.v.CA.CertPEM}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	vso := fmt.Sprintf(`
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultConnection
metadata: {name: vault, namespace: app}
spec:
  address: %s
  caCertSecretRef: vault-ca
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata: {name: vso-auth, namespace: app}
spec:
  vaultConnectionRef: vault
  method: kubernetes
  mount: kubernetes
  kubernetes:
    role: app
    serviceAccount: app
    audiences: [vault]
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultStaticSecret
metadata: {name: vso-config, namespace: app}
spec:
  vaultAuthRef: vso-auth
  type: kv-v2
  mount: secret
  path: app/config
  refreshAfter: 30s
  destination:
    name: vso-config
    create: true
    labels: {converted: vso}
  rolloutRestartTargets:
  - {kind: argo.Rollout, name: web}
`, s.v.Addr)
	eso := fmt.Sprintf(`
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {name: vault-backend, namespace: app}
spec:
  provider:
    vault:
      server: %s
      path: secret
      version: v2
      caProvider: {type: Secret, name: vault-ca, key: ca.crt}
      auth:
        kubernetes:
          mountPath: kubernetes
          role: app
          serviceAccountRef: {name: app, audiences: [vault]}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: eso-config, namespace: app}
spec:
  refreshInterval: 5s
  secretStoreRef: {name: vault-backend, kind: SecretStore}
  target: {name: eso-config}
  data:
  - secretKey: DB_PASSWORD
    remoteRef: {key: app/config, property: password}
`, s.v.Addr)

	dir := t.TempDir()
	var objects []unstructured.Unstructured
	for name, manifest := range map[string]string{"vso.yaml": vso, "eso.yaml": eso} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := cli(t, "convert", "-f", file)
		if code != 0 {
			t.Fatalf("convert %s: exit %d\n%s", name, code, stderr)
		}
		t.Logf("convert %s:\n%s%s", name, out, stderr)
		want := map[string]string{
			"vso.yaml": `VaultStaticSecret/app/vso-config: spec.rolloutRestartTargets[0].kind: argo.Rollout "web"`,
			"eso.yaml": "ExternalSecret/app/eso-config: spec.data: the Secret also holds every other key of secret/app/config",
		}[name]
		if !strings.Contains(stderr, want) {
			t.Errorf("convert %s: stderr lacks %q:\n%s", name, want, stderr)
		}
		if strings.Contains(out+stderr, "convert-first-4e1a") {
			t.Fatalf("convert printed a secret value")
		}
		for _, doc := range strings.Split(out, "\n---\n") {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("convert %s wrote YAML that does not parse: %v\n%s", name, err, doc)
			}
			objects = append(objects, u)
		}
	}
	// Two connections, two VaultAuths, two VaultSecrets; all accepted by
	// the API server's validation of the CRDs.
	kinds := map[string]int{}
	for i := range objects {
		if err := s.c.Create(ctx, &objects[i]); err != nil {
			t.Fatalf("the API server refused converted %s %s: %v", objects[i].GetKind(), objects[i].GetName(), err)
		}
		kinds[objects[i].GetKind()]++
	}
	if kinds["ClusterVaultConnection"] != 2 || kinds["VaultAuth"] != 2 || kinds["VaultSecret"] != 2 {
		t.Fatalf("converted kinds %v, want 2 of each", kinds)
	}

	// vaultData is what Vault holds now, read with the root token.
	vaultData := func() map[string]any {
		return s.v.Read("secret/data/app/config").Data["data"].(map[string]any)
	}
	check := func(name string, want map[string]string) func() error {
		return func() error {
			sec, err := s.secret("app", name)
			if err != nil {
				return err
			}
			for k, v := range want {
				if string(sec.Data[k]) != v {
					return fmt.Errorf("Secret %s key %s does not hold Vault's value (keys %v)", name, k, keys(sec.Data))
				}
			}
			return nil
		}
	}
	v := vaultData()
	eventually(t, 60*time.Second, check("vso-config", map[string]string{"password": v["password"].(string), "user": v["user"].(string)}))
	eventually(t, 60*time.Second, check("eso-config", map[string]string{"DB_PASSWORD": v["password"].(string), "password": v["password"].(string), "user": v["user"].(string)}))
	if sec, _ := s.secret("app", "vso-config"); sec.Labels["converted"] != "vso" {
		t.Errorf("vso-config labels %v: destination.labels not carried over", sec.Labels)
	}
	s.waitReady(t, "app", "eso-config", metav1.ConditionTrue, "Synced", 30*time.Second)

	// A change in Vault reaches the ESO-converted Secret: its refresh
	// (refreshInterval 5s, ttl 15s) is short.
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "convert-second-9b3c", "user": "svc"}})
	v = vaultData()
	eventually(t, 60*time.Second, check("eso-config", map[string]string{"DB_PASSWORD": v["password"].(string)}))
}
