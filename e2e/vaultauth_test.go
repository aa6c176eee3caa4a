package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// applyVaultAuth creates a VaultAuth from YAML, as a user writes it.
func (s *syncerStack) applyVaultAuth(t *testing.T, manifest string) {
	t.Helper()
	var va v1alpha1.VaultAuth
	if err := yaml.UnmarshalStrict([]byte(manifest), &va); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if err := s.c.Create(context.Background(), &va); err != nil {
		t.Fatalf("create VaultAuth: %v", err)
	}
}

// waitVaultAuth waits until the VaultAuth's status is as asked and
// returns it.
func (s *syncerStack) waitVaultAuth(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string, users int32, timeout time.Duration) *v1alpha1.VaultAuth {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var va v1alpha1.VaultAuth
		err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &va)
		if err == nil && va.Status.VaultSecrets == users && va.Status.ObservedGeneration == va.Generation {
			if c := meta.FindStatusCondition(va.Status.Conditions, "Ready"); c != nil && c.Status == status && c.Reason == reason {
				return &va
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("VaultAuth %s/%s not Ready=%s/%s with %d VaultSecrets within %s: %+v (err %v)\ncontroller log:\n%s",
				ns, name, status, reason, users, timeout, va.Status, err, s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestVaultAuth: the manifest (a VaultAuth and a VaultSecret
// naming it) syncs; many VaultSecrets sharing one VaultAuth cost one
// login in Vault's own audit log; kubectl get vaultauth shows Ready and
// the count; an edited VaultAuth re-syncs its VaultSecrets under the new
// identity; a deleted one makes them AuthNotFound while their Secrets
// stay, and its re-creation brings them back at once.
func TestVaultAuth(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	ctx := context.Background()
	audit := s.v.EnableFileAudit()
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "first-value-9c1d", "user": "svc"}})
	logins := func() int { return harness.AuditCount(t, audit, "auth/kubernetes/login") }

	// The manifest, with the one source this release has
	// (spec.sources comes later).
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
  source:
    kv: {mount: secret, path: app/config}
  ttl: 30s
  target: {name: app-config}
`); err != nil {
		t.Fatalf("create VaultSecret: %v", err)
	}
	sec := s.waitSecret(t, "app", "app-config", 30*time.Second, func(*corev1.Secret) bool { return true })
	if string(sec.Data["password"]) != "first-value-9c1d" || string(sec.Data["user"]) != "svc" {
		t.Fatalf("Secret data keys %v", keys(sec.Data))
	}
	s.waitReady(t, "app", "app-config", metav1.ConditionTrue, "Synced", 10*time.Second)
	s.waitVaultAuth(t, "app", "app", metav1.ConditionTrue, "LoggedIn", 1, 10*time.Second)

	const n = 10
	for i := range n {
		if _, err := s.apply(t, fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: shared-%d, namespace: app}
spec:
  authRef: {name: app}
  source:
    kv: {mount: secret, path: app/config}
  ttl: 1h
`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		s.waitReady(t, "app", fmt.Sprintf("shared-%d", i), metav1.ConditionTrue, "Synced", 30*time.Second)
	}
	s.waitVaultAuth(t, "app", "app", metav1.ConditionTrue, "LoggedIn", n+1, 10*time.Second)
	if got := logins(); got != 1 {
		t.Fatalf("%d VaultSecrets sharing one VaultAuth: %d logins in Vault's audit log, want 1", n+1, got)
	}

	t.Run("kubectl get vaultauth shows Ready and the count", func(t *testing.T) {
		kube := kubernetes.NewForConfigOrDie(s.cp.Config)
		raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/apis/secrets.vaultkms.io/v1alpha1/namespaces/app/vaultauths/app").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var table metav1.Table
		if err := json.Unmarshal(raw, &table); err != nil {
			t.Fatal(err)
		}
		cells := map[string]any{}
		for i, c := range table.ColumnDefinitions {
			cells[c.Name] = table.Rows[0].Cells[i]
		}
		if cells["Ready"] != "True" || cells["Reason"] != "LoggedIn" || fmt.Sprint(cells["VaultSecrets"]) != fmt.Sprint(n+1) {
			t.Fatalf("kubectl get vaultauth columns %v, want Ready True, Reason LoggedIn, VaultSecrets %d", cells, n+1)
		}
	})

	t.Run("an edited VaultAuth re-syncs its VaultSecrets under the new identity", func(t *testing.T) {
		s.role("app2", "app", "app-read", nil)
		before := s.vaultSecret(t, "app", "shared-0")
		var va v1alpha1.VaultAuth
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "app"}, &va); err != nil {
			t.Fatal(err)
		}
		va.Spec.Kubernetes.Role = "app2"
		if err := s.c.Update(ctx, &va); err != nil {
			t.Fatal(err)
		}
		// shared-0 has ttl 1h: only the edit makes it read Vault now.
		deadline := time.Now().Add(30 * time.Second)
		for {
			after := s.vaultSecret(t, "app", "shared-0")
			// lastSyncTime has a resolution of one second, and the whole
			// create-then-edit sequence may fit in one: the new hash (of
			// the new identity, recorded only by a successful sync) is the
			// proof, a lastSyncTime not older than before's the sanity check.
			if after.Status.SourceHash != before.Status.SourceHash && after.Status.LastSyncTime != nil && !after.Status.LastSyncTime.Before(before.Status.LastSyncTime) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shared-0 not re-synced after its VaultAuth's edit: %+v\n%s", after.Status, s.log.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
		s.waitVaultAuth(t, "app", "app", metav1.ConditionTrue, "LoggedIn", n+1, 10*time.Second)
		if got := logins(); got != 2 {
			t.Fatalf("after the edit: %d logins, want 2 (one per spec of the VaultAuth, not one per VaultSecret)", got)
		}
	})

	t.Run("deleted VaultAuth: AuthNotFound, Secrets kept; re-created: synced again", func(t *testing.T) {
		var va v1alpha1.VaultAuth
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "app"}, &va); err != nil {
			t.Fatal(err)
		}
		if err := s.c.Delete(ctx, &va); err != nil {
			t.Fatal(err)
		}
		vs := s.waitReady(t, "app", "shared-1", metav1.ConditionFalse, "AuthNotFound", 30*time.Second)
		if c := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); !strings.Contains(c.Message, "spec.authRef.name") {
			t.Fatalf("AuthNotFound message %q does not name the field", c.Message)
		}
		// shared-1 expires in an hour (expiryPolicy Delete): its Secret is
		// kept until then.
		sec, err := s.secret("app", "shared-1")
		if err != nil || string(sec.Data["password"]) != "first-value-9c1d" {
			t.Fatalf("Secret of a VaultSecret whose VaultAuth was deleted: %v (err %v); it must stay until its own expiry", keys(sec.Data), err)
		}
		// The same VaultAuth as the one deleted (role app2 since the edit
		// above): its VaultSecrets hash as at their last sync, and it is
		// the AuthNotFound's end that makes them read Vault again.
		s.applyVaultAuth(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultAuth
metadata: {name: app, namespace: app}
spec:
  kubernetes: {role: app2, serviceAccountName: app}
`)
		// The failure's back-off (5 s and up) does not hold back a
		// VaultAuth that is back: the timeout below is far beyond it only
		// to absorb a slow machine.
		s.waitReady(t, "app", "shared-1", metav1.ConditionTrue, "Synced", 30*time.Second)
	})

	t.Run("jwt: a Vault trusting the cluster's issuer keys, no TokenReview", func(t *testing.T) {
		s.v.EnableAuth("jwt", "jwt")
		s.v.Write("auth/jwt/config", map[string]any{"jwt_validation_pubkeys": serviceAccountKeys(t, s.cp)})
		s.v.Write("auth/jwt/role/app", map[string]any{"role_type": "jwt", "bound_audiences": "vault", "user_claim": "sub",
			"bound_subject": "system:serviceaccount:app:app", "token_policies": "app-read", "token_ttl": "1h"})
		s.applyVaultAuth(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultAuth
metadata: {name: oidc, namespace: app}
spec:
  jwt: {role: app, serviceAccountName: app}
`)
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: via-jwt, namespace: app}
spec:
  authRef: {name: oidc}
  source:
    kv: {mount: secret, path: app/config}
  ttl: 1h
`); err != nil {
			t.Fatal(err)
		}
		sec := s.waitSecret(t, "app", "via-jwt", 30*time.Second, func(*corev1.Secret) bool { return true })
		if string(sec.Data["password"]) != "first-value-9c1d" {
			t.Fatalf("Secret data keys %v", keys(sec.Data))
		}
		s.waitVaultAuth(t, "app", "oidc", metav1.ConditionTrue, "LoggedIn", 1, 10*time.Second)
		if got := harness.AuditCount(t, audit, "auth/jwt/login"); got != 1 {
			t.Fatalf("%d jwt logins, want 1", got)
		}
	})
}

// serviceAccountKeys returns the API server's service account signing
// keys (its OIDC JWKS) as PEM, as an administrator configures a Vault jwt
// mount that trusts the cluster's issuer.
func serviceAccountKeys(t *testing.T, cp *harness.ControlPlane) []string {
	t.Helper()
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("read the issuer's keys: %v", err)
	}
	var jwks struct {
		Keys []struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			N   string `json:"n"`
			E   string `json:"e"`
			X   string `json:"x"`
			Y   string `json:"y"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &jwks); err != nil {
		t.Fatal(err)
	}
	var out []string
	b64 := func(v string) *big.Int {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("JWK: %v", err)
		}
		return new(big.Int).SetBytes(b)
	}
	for _, k := range jwks.Keys {
		var pub any
		switch {
		case k.Kty == "RSA":
			pub = &rsa.PublicKey{N: b64(k.N), E: int(b64(k.E).Int64())}
		case k.Kty == "EC" && k.Crv == "P-256":
			pub = &ecdsa.PublicKey{Curve: elliptic.P256(), X: b64(k.X), Y: b64(k.Y)}
		default:
			t.Fatalf("key type %s %s: this test reads RSA and P-256 keys", k.Kty, k.Crv)
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	}
	if len(out) == 0 {
		t.Fatal("the issuer publishes no keys")
	}
	return out
}

// TestForceSync: a new value of the force-sync annotation reads Vault
// once, whatever the refresh schedule; other edits of the VaultSecret's
// metadata read nothing.
func TestForceSync(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	ctx := context.Background()
	audit := s.v.EnableFileAudit()
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/forced", map[string]any{"data": map[string]any{"v": "one"}})
	// Only reads: the test's own writes of the path are in the log too.
	reads := func() int { return auditReads(t, audit, "secret/data/app/forced") }

	// ttl 1h: the next scheduled read is 40 minutes away.
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: forced, namespace: app}
spec:
  auth:
    kubernetes: {role: app, serviceAccountName: app}
  source:
    kv: {mount: secret, path: app/forced}
  ttl: 1h
`); err != nil {
		t.Fatal(err)
	}
	s.waitSecret(t, "app", "forced", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "one" })
	s.waitReady(t, "app", "forced", metav1.ConditionTrue, "Synced", 10*time.Second)
	if got := reads(); got != 1 {
		t.Fatalf("%d reads after the first sync, want 1", got)
	}
	annotate := func(k, v string) {
		t.Helper()
		var vs v1alpha1.VaultSecret
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "forced"}, &vs); err != nil {
			t.Fatal(err)
		}
		if vs.Annotations == nil {
			vs.Annotations = map[string]string{}
		}
		vs.Annotations[k] = v
		if err := s.c.Update(ctx, &vs); err != nil {
			t.Fatalf("annotate: %v", err)
		}
	}

	s.v.Write("secret/data/app/forced", map[string]any{"data": map[string]any{"v": "two"}})
	annotate("secrets.vaultkms.io/force-sync", "1")
	s.waitSecret(t, "app", "forced", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "two" })
	s.waitReady(t, "app", "forced", metav1.ConditionTrue, "Synced", 10*time.Second)

	// Another annotation is an event for the same VaultSecret, handled
	// before the next force-sync value: it must read nothing.
	annotate("team", "payments")
	s.v.Write("secret/data/app/forced", map[string]any{"data": map[string]any{"v": "three"}})
	annotate("secrets.vaultkms.io/force-sync", "2")
	s.waitSecret(t, "app", "forced", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "three" })
	if got := reads(); got != 3 {
		t.Fatalf("%d reads of the path, want 3: the first sync and one per force-sync value", got)
	}
	// A restart forgets everything in memory: the value synced is in
	// status, so the restarted controller reads nothing for it (a read
	// at its start would make the count below 5).
	s.restartController(t)
	s.v.Write("secret/data/app/forced", map[string]any{"data": map[string]any{"v": "four"}})
	annotate("secrets.vaultkms.io/force-sync", "3")
	s.waitSecret(t, "app", "forced", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "four" })
	if got := reads(); got != 4 {
		t.Fatalf("%d reads, want 4: one more for the new value, none for the restart", got)
	}
}

// TestVaultAuthAdmission: the API server refuses, with a message naming
// the fix, a VaultSecret with both or neither of auth and authRef, and a
// VaultAuth with no or two methods.
func TestVaultAuthAdmission(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	cases := []struct{ name, manifest, want string }{
		{"VaultSecret with auth and authRef", `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: both, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  authRef: {name: app}
  source: {kv: {mount: secret, path: app/config}}
`, "spec.auth and spec.authRef are both set"},
		{"VaultSecret with neither", `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: neither, namespace: app}
spec:
  source: {kv: {mount: secret, path: app/config}}
`, "spec needs one of auth (an inline login) or authRef"},
		{"VaultSecret authRef without a name", `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: noname, namespace: app}
spec:
  authRef: {}
  source: {kv: {mount: secret, path: app/config}}
`, "spec.authRef.name"},
		{"VaultAuth with two methods", `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultAuth
metadata: {name: two, namespace: app}
spec:
  kubernetes: {role: app, serviceAccountName: app}
  jwt: {role: app, serviceAccountName: app}
`, "spec needs exactly one of kubernetes, appRole or jwt"},
		{"VaultAuth with none", `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultAuth
metadata: {name: none, namespace: app}
spec: {}
`, "spec needs exactly one of kubernetes, appRole or jwt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.applyRaw(t, c.manifest)
			if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("admission: %v, want Invalid containing %q", err, c.want)
			}
		})
	}
	// The inline form is unchanged: still accepted as before.
	if err := s.applyRaw(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: inline, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
`); err != nil {
		t.Fatalf("inline auth refused: %v", err)
	}
}

// auditReads counts the successful reads of path in a Vault file audit
// log (harness.AuditCount counts every operation, writes included).
func auditReads(t *testing.T, p, path string) int {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("open audit log: %v", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e struct {
			Type    string `json:"type"`
			Error   string `json:"error"`
			Request struct {
				Path      string `json:"path"`
				Operation string `json:"operation"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "response" && e.Error == "" && e.Request.Path == path && e.Request.Operation == "read" {
			n++
		}
	}
	return n
}
