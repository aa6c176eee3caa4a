package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// TestVaultSecretSources: the manifests as written merge two kv
// paths into one Secret; two sources giving one key are KeyConflict and
// write nothing; a kv source refreshed every few seconds beside a
// certificate reads only itself, and the Secret expires with the
// certificate, the earliest of the two; templates see every source.
func TestVaultSecretSources(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	audit := s.v.EnableFileAudit()
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"user": "svc", "host": "db.app"}})
	s.v.Write("secret/data/app/extra", map[string]any{"data": map[string]any{"apiKey": "k-1"}})

	// The manifests of the README and docs/controller.md, as written.
	s.applyVaultAuth(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultAuth
metadata: {name: app, namespace: app}
spec:
  kubernetes: {role: app, serviceAccountName: app}
`)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: app-config, namespace: app}
spec:
  authRef: {name: app}
  sources:
    - kv: {mount: secret, path: app/config}
    - kv: {mount: secret, path: app/extra}
  ttl: 30s
  target: {name: app-config}
`); err != nil {
		t.Fatal(err)
	}
	sec := s.waitSecret(t, "app", "app-config", 30*time.Second, func(sec *corev1.Secret) bool { return len(sec.Data) == 3 })
	if string(sec.Data["user"]) != "svc" || string(sec.Data["host"]) != "db.app" || string(sec.Data["apiKey"]) != "k-1" {
		t.Fatalf("Secret keys %v: want the union of both paths", keys(sec.Data))
	}
	s.waitReady(t, "app", "app-config", metav1.ConditionTrue, "Synced", 10*time.Second)
	// A change in either path lands at the next refresh (ttl 30s: 20 s).
	s.v.Write("secret/data/app/extra", map[string]any{"data": map[string]any{"apiKey": "k-2"}})
	s.waitSecret(t, "app", "app-config", 40*time.Second, func(sec *corev1.Secret) bool {
		return string(sec.Data["apiKey"]) == "k-2" && string(sec.Data["user"]) == "svc"
	})

	// Two sources giving one key: KeyConflict naming both and the key;
	// no Secret.
	s.v.Write("secret/data/app/clash", map[string]any{"data": map[string]any{"user": "other"}})
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: clash, namespace: app}
spec:
  authRef: {name: app}
  sources:
    - kv: {mount: secret, path: app/config}
    - kv: {mount: secret, path: app/clash}
  ttl: 30s
`); err != nil {
		t.Fatal(err)
	}
	vs := s.waitReady(t, "app", "clash", metav1.ConditionFalse, "KeyConflict", 30*time.Second)
	msg := ""
	for _, c := range vs.Status.Conditions {
		if c.Type == "Ready" {
			msg = c.Message
		}
	}
	for _, want := range []string{`"user"`, "spec.sources[0] (kv secret/app/config)", "spec.sources[1] (kv secret/app/clash)"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("KeyConflict message %q does not name %s", msg, want)
		}
	}
	if strings.Contains(msg, "other") || strings.Contains(msg, "svc") {
		t.Fatalf("KeyConflict message %q holds a value", msg)
	}
	if _, err := s.secret("app", "clash"); !apierrors.IsNotFound(err) {
		t.Fatalf("a Secret was written despite the key conflict (get: %v)", err)
	}

	// Admission: more than 16 sources, and source with sources, are refused.
	var many strings.Builder
	for i := 0; i < 17; i++ {
		fmt.Fprintf(&many, "    - kv: {mount: secret, path: app/p%d}\n", i)
	}
	for _, bad := range []struct{ manifest, want string }{
		{"apiVersion: secrets.vaultkms.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: many, namespace: app}\nspec:\n  authRef: {name: app}\n  sources:\n" + many.String(), "must have at most 16 items"},
		{`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: both, namespace: app}
spec:
  authRef: {name: app}
  source: {kv: {mount: secret, path: app/config}}
  sources: [{kv: {mount: secret, path: app/extra}}]
`, "exactly one of source (one Vault path) or sources"},
	} {
		if err := s.applyRaw(t, bad.manifest); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("apply: %v, want a refusal saying %q", err, bad.want)
		}
	}

	// A kv source read every 5 s beside a certificate re-issued at two
	// thirds of its 60 s: the kv path is read several times, the
	// certificate issued once, and the Secret expires with the
	// certificate. The template sees both.
	rootPKI(s.v)
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["update"] }`)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: web, namespace: app}
spec:
  authRef: {name: app}
  sources:
    - pki: {mount: pki, role: web, commonName: web.app.svc}
    - kv: {mount: secret, path: app/extra}
  ttl: 60s
  refreshInterval: 5s
  target:
    template: {summary: "{{ .apiKey }} for {{ len (index . \"tls.crt\") }} bytes of certificate"}
`); err != nil {
		t.Fatal(err)
	}
	sec = s.waitSecret(t, "app", "web", 30*time.Second, func(sec *corev1.Secret) bool { return len(sec.Data["tls.crt"]) > 0 })
	if sec.Type != corev1.SecretTypeTLS || string(sec.Data["apiKey"]) != "k-2" || !strings.HasPrefix(string(sec.Data["summary"]), "k-2 for ") {
		t.Fatalf("Secret type %s keys %v summary %q: want a TLS Secret with the kv key and the templated summary", sec.Type, keys(sec.Data), sec.Data["summary"])
	}
	b, _ := pem.Decode(sec.Data["tls.crt"])
	if b == nil {
		t.Fatal("tls.crt holds no certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	issued := func() int { return harness.AuditCount(t, audit, "pki/issue/web") }
	kvReads := func() int { return auditReads(t, audit, "secret/data/app/extra") }
	before := kvReads()
	issuedBefore := issued()
	eventually(t, 30*time.Second, func() error {
		if n := kvReads() - before; n < 3 {
			return fmt.Errorf("%d reads of the kv source since the first sync, want at least 3 (refreshInterval 5s)", n)
		}
		return nil
	})
	if n := issued(); n != issuedBefore {
		t.Fatalf("the certificate was issued %d more times while only the kv source was due: a refresh of one source read both", n-issuedBefore)
	}
	sec, err = s.secret("app", "web")
	if err != nil {
		t.Fatal(err)
	}
	exp, err := time.Parse(time.RFC3339, sec.Annotations["secrets.vaultkms.io/expires-at"])
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(cert.NotAfter.Truncate(time.Second)) {
		t.Fatalf("expires-at %s, want the certificate's NotAfter %s (the earliest of the sources' expiries; the kv source's is later)", exp, cert.NotAfter)
	}
	if _, err := s.secret("app", "web"); err != nil {
		t.Fatal(errors.New("the Secret disappeared"))
	}
}
