package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// loginCounter counts the requests a proxy in front of a Vault relays,
// and the kubernetes logins by the namespace of the service account
// token presented: what reached that Vault's address, and for whom.
type loginCounter struct {
	mu       sync.Mutex
	requests int
	logins   map[string]int
}

func (c *loginCounter) observe(r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	if r.URL.Path != "/v1/auth/kubernetes/login" {
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var login struct {
		JWT string `json:"jwt"`
	}
	ns := "unknown"
	if json.Unmarshal(body, &login) == nil {
		if parts := strings.Split(login.JWT, "."); len(parts) == 3 {
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var claims struct {
				Sub string `json:"sub"`
			}
			// system:serviceaccount:<namespace>:<name>
			if json.Unmarshal(payload, &claims) == nil {
				if f := strings.Split(claims.Sub, ":"); len(f) == 4 {
					ns = f[2]
				}
			}
		}
	}
	c.logins[ns]++
}

func (c *loginCounter) counts() (requests int, logins map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.logins {
		out[k] = v
	}
	return c.requests, out
}

// connectionReady waits until the connection's Ready condition is as
// asked for its current generation.
func (s *syncerStack) connectionReady(t *testing.T, name string, status metav1.ConditionStatus, reason string) *v1alpha1.ClusterVaultConnection {
	t.Helper()
	var cvc v1alpha1.ClusterVaultConnection
	eventually(t, 30*time.Second, func() error {
		if err := s.c.Get(context.Background(), client.ObjectKey{Name: name}, &cvc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cvc.Status.Conditions, "Ready")
		if c == nil || c.Status != status || c.Reason != reason || cvc.Status.ObservedGeneration != cvc.Generation {
			return fmt.Errorf("ClusterVaultConnection %s: %+v, want Ready=%s/%s for generation %d", name, cvc.Status, status, reason, cvc.Generation)
		}
		return nil
	})
	return &cvc
}

// vaultAuthReason waits until the VaultAuth is Ready=status with reason,
// and returns the condition's message.
func (s *syncerStack) vaultAuthReason(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string) string {
	t.Helper()
	var msg string
	eventually(t, 60*time.Second, func() error {
		var va v1alpha1.VaultAuth
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &va); err != nil {
			return err
		}
		c := meta.FindStatusCondition(va.Status.Conditions, "Ready")
		if c == nil || c.Status != status || c.Reason != reason || va.Status.ObservedGeneration != va.Generation {
			return fmt.Errorf("VaultAuth %s/%s: %+v, want Ready=%s/%s", ns, name, va.Status.Conditions, status, reason)
		}
		msg = c.Message
		return nil
	})
	return msg
}

// vaultSecretReason waits until the VaultSecret is Ready=status with
// reason for its generation, and returns the condition's message.
func (s *syncerStack) vaultSecretReason(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string) string {
	t.Helper()
	var msg string
	eventually(t, 60*time.Second, func() error {
		var vs v1alpha1.VaultSecret
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &vs); err != nil {
			return err
		}
		c := meta.FindStatusCondition(vs.Status.Conditions, "Ready")
		if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != vs.Generation {
			return fmt.Errorf("VaultSecret %s/%s: %+v, want Ready=%s/%s", ns, name, vs.Status.Conditions, status, reason)
		}
		msg = c.Message
		return nil
	})
	return msg
}

// secretPassword waits until the Secret's password is want.
func (s *syncerStack) secretPassword(t *testing.T, ns, name, want string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		sec, err := s.secret(ns, name)
		if err != nil {
			return err
		}
		if got := string(sec.Data["password"]); got != want {
			return fmt.Errorf("Secret %s/%s: password %q, want %q", ns, name, got, want)
		}
		return nil
	})
}

// editConnection reads the connection, changes it with edit and writes
// it back, again on a conflict (the controller writes its status).
func (s *syncerStack) editConnection(t *testing.T, name string, edit func(*v1alpha1.ClusterVaultConnection)) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		var cvc v1alpha1.ClusterVaultConnection
		if err := s.c.Get(context.Background(), client.ObjectKey{Name: name}, &cvc); err != nil {
			return err
		}
		edit(&cvc)
		return s.c.Update(context.Background(), &cvc)
	})
}

// applyObject creates an object from YAML, exactly as written.
func (s *syncerStack) applyObject(t *testing.T, manifest string, obj client.Object) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(manifest), obj); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if err := s.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T: %v", obj, err)
	}
}

// TestClusterVaultConnection: a second Vault ("eu") behind a
// ClusterVaultConnection that allows namespaces labelled vault=eu. A
// VaultAuth of an allowed namespace logs in there and its VaultSecret
// syncs that Vault's data; one of a namespace not allowed is
// ConnectionNotAllowed, and so are its VaultSecrets, with not one
// request reaching the eu address for it (a counting proxy in front of
// it reads the namespace of every login's token, and the eu Vault's
// audit log agrees); a missing connection is ConnectionNotFound; and
// allowing the namespace later makes it sync.
func TestClusterVaultConnection(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	ctx := context.Background()
	const readPolicy = `path "secret/data/app/*" { capabilities = ["read"] }`
	s.v.Policy("app-read", readPolicy)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "from-default-vault-41a2"}})

	eu := harness.StartVault(t)
	harness.ConfigureKubernetesAuth(eu, s.cp, "kubernetes")
	euAudit := eu.EnableFileAudit()
	eu.Policy("app-read", readPolicy)
	// The eu role would accept both namespaces: only the connection's
	// allowedNamespaces keeps "other" out.
	eu.Write("auth/kubernetes/role/app", map[string]any{"bound_service_account_names": "app", "bound_service_account_namespaces": "app,other",
		"token_policies": "app-read", "token_ttl": "1h", "audience": "vault"})
	eu.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "from-eu-vault-7f3c"}})
	counter := &loginCounter{logins: map[string]int{}}
	proxy := startTLSProxy(t, eu, func(_ http.ResponseWriter, r *http.Request) bool { counter.observe(r); return false })

	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{"vault": "eu"}}})
	if err := s.c.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "vaultkms-system", Name: "vault-eu-ca"},
		Data: map[string][]byte{"ca.crt": eu.CA.CertPEM}}); err != nil {
		t.Fatal(err)
	}

	// The manifest as written: admitted, and Ready once its CA
	// Secret is loaded (nothing is sent to its address for that).
	var cvc v1alpha1.ClusterVaultConnection
	s.applyObject(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: ClusterVaultConnection
metadata: {name: eu}
spec:
  address: https://vault-eu.example:8200
  caCert: {secretRef: {namespace: vaultkms-system, name: vault-eu-ca, key: ca.crt}}
  namespace: team-a                 # Vault Enterprise namespace, optional
  allowedNamespaces: {matchLabels: {vault: eu}}
`, &cvc)
	s.connectionReady(t, "eu", metav1.ConditionTrue, "Valid")
	// This Vault is not Enterprise: the test's eu is the proxy, root
	// namespace.
	s.editConnection(t, "eu", func(c *v1alpha1.ClusterVaultConnection) { c.Spec.Address, c.Spec.Namespace = proxy, "" })
	s.connectionReady(t, "eu", metav1.ConditionTrue, "Valid")

	vaultAuthAndSecret := func(ns, name, connection string) {
		t.Helper()
		ref := ""
		if connection != "" {
			ref = fmt.Sprintf("\n  connectionRef: {name: %s}", connection)
		}
		s.applyVaultAuth(t, fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultAuth
metadata: {name: %s, namespace: %s}
spec:
  kubernetes: {role: app, serviceAccountName: app}%s
`, name, ns, ref))
		if _, err := s.apply(t, fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: %s-config, namespace: %s}
spec:
  authRef: {name: %s}
  source:
    kv: {mount: secret, path: app/config}
  ttl: 1h
`, name, ns, name)); err != nil {
			t.Fatal(err)
		}
	}

	// First, and alone on the eu connection: the namespace it does not
	// allow.
	vaultAuthAndSecret("other", "eu", "eu")
	msg := s.vaultAuthReason(t, "other", "eu", metav1.ConditionFalse, "ConnectionNotAllowed")
	if !strings.Contains(msg, "allowedNamespaces") || strings.Contains(msg, proxy) {
		t.Fatalf("ConnectionNotAllowed message %q: want the field to change, never the address", msg)
	}
	s.vaultSecretReason(t, "other", "eu-config", metav1.ConditionFalse, "ConnectionNotAllowed")
	if requests, logins := counter.counts(); requests != 0 {
		t.Fatalf("the eu address received %d requests (logins by namespace %v) while only a namespace it does not allow used it", requests, logins)
	}
	if _, err := s.secret("other", "eu-config"); err == nil {
		t.Fatal("a VaultSecret refused its connection has a Secret")
	}

	t.Run("missing connection: ConnectionNotFound naming it", func(t *testing.T) {
		vaultAuthAndSecret("app", "lost", "nowhere")
		msg := s.vaultAuthReason(t, "app", "lost", metav1.ConditionFalse, "ConnectionNotFound")
		if !strings.Contains(msg, `"nowhere"`) || !strings.Contains(msg, "spec.connectionRef.name") {
			t.Fatalf("ConnectionNotFound message %q: want the name and the field", msg)
		}
		s.vaultSecretReason(t, "app", "lost-config", metav1.ConditionFalse, "ConnectionNotFound")
	})

	t.Run("allowed namespace syncs from the eu Vault, the default from the flags' Vault", func(t *testing.T) {
		vaultAuthAndSecret("app", "eu", "eu")
		vaultAuthAndSecret("app", "home", "")
		s.secretPassword(t, "app", "eu-config", "from-eu-vault-7f3c")
		s.secretPassword(t, "app", "home-config", "from-default-vault-41a2")
		s.vaultAuthReason(t, "app", "eu", metav1.ConditionTrue, "LoggedIn")
		s.vaultSecretReason(t, "app", "eu-config", metav1.ConditionTrue, "Synced")
		_, logins := counter.counts()
		if logins["app"] < 1 || logins["other"] != 0 || len(logins) != 1 {
			t.Fatalf("logins at the eu address by namespace: %v; want app's only", logins)
		}
		// The other namespace's VaultAuth is still refused, its retries
		// included, and the eu Vault's own audit log saw one login.
		s.vaultAuthReason(t, "other", "eu", metav1.ConditionFalse, "ConnectionNotAllowed")
		if n := harness.AuditCount(t, euAudit, "auth/kubernetes/login"); n != logins["app"] {
			t.Fatalf("eu Vault's audit log: %d logins, the proxy saw %d from app", n, logins["app"])
		}
	})

	t.Run("invalid connection: Ready=False naming the field", func(t *testing.T) {
		var bad v1alpha1.ClusterVaultConnection
		s.applyObject(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: ClusterVaultConnection
metadata: {name: plain}
spec:
  address: http://vault-eu.example:8200
  allowedNamespaces: {}
`, &bad)
		got := s.connectionReady(t, "plain", metav1.ConditionFalse, "AddressInvalid")
		if c := meta.FindStatusCondition(got.Status.Conditions, "Ready"); !strings.Contains(c.Message, "spec.address") {
			t.Fatalf("message %q does not name spec.address", c.Message)
		}
		var missingCA v1alpha1.ClusterVaultConnection
		s.applyObject(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: ClusterVaultConnection
metadata: {name: no-ca}
spec:
  address: https://vault-eu.example:8200
  caCert: {secretRef: {namespace: vaultkms-system, name: absent}}
`, &missingCA)
		got = s.connectionReady(t, "no-ca", metav1.ConditionFalse, "CACertInvalid")
		if c := meta.FindStatusCondition(got.Status.Conditions, "Ready"); !strings.Contains(c.Message, "spec.caCert.secretRef") {
			t.Fatalf("message %q does not name spec.caCert.secretRef", c.Message)
		}
	})

	t.Run("allowing the namespace makes it sync", func(t *testing.T) {
		s.editConnection(t, "eu", func(c *v1alpha1.ClusterVaultConnection) {
			c.Spec.AllowedNamespaces = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{"app", "other"}}}}
		})
		s.secretPassword(t, "other", "eu-config", "from-eu-vault-7f3c")
		s.vaultAuthReason(t, "other", "eu", metav1.ConditionTrue, "LoggedIn")
		if _, logins := counter.counts(); logins["other"] < 1 {
			t.Fatalf("logins at the eu address by namespace: %v; want other's now", logins)
		}
	})

	t.Run("deleted connection: its VaultAuths and VaultSecrets are ConnectionNotFound", func(t *testing.T) {
		if err := s.c.Delete(ctx, &v1alpha1.ClusterVaultConnection{ObjectMeta: metav1.ObjectMeta{Name: "eu"}}); err != nil {
			t.Fatal(err)
		}
		s.vaultAuthReason(t, "app", "eu", metav1.ConditionFalse, "ConnectionNotFound")
		s.vaultSecretReason(t, "app", "eu-config", metav1.ConditionFalse, "ConnectionNotFound")
		// The default connection is not affected.
		s.vaultAuthReason(t, "app", "home", metav1.ConditionTrue, "LoggedIn")
	})
}

// TestConnectionMovedKeepsLeasesWithTheirVault: a dynamic VaultSecret
// reads database credentials through a ClusterVaultConnection, whose
// address then moves to another Vault. The VaultSecret syncs again from
// the new Vault, and the lease the old one issued is never sent to the new
// one: that Vault would not know it, and would answer its revocation with
// success while the credentials live on. It is reported as not revoked,
// naming the Vault that issued it.
func TestConnectionMovedKeepsLeasesWithTheirVault(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	ctx := context.Background()
	var cas []byte
	vaults := map[string]*harness.Vault{}
	audits := map[string]string{}
	for _, name := range []string{"first", "second"} {
		v := harness.StartVault(t)
		harness.ConfigureKubernetesAuth(v, s.cp, "kubernetes")
		audits[name] = v.EnableFileAudit()
		databaseOn(v, pg, "10m", "1h")
		v.Write("auth/kubernetes/role/app", map[string]any{"bound_service_account_names": "app", "bound_service_account_namespaces": "app",
			"token_policies": "db-creds", "token_ttl": "1h", "audience": "vault"})
		cas = append(cas, v.CA.CertPEM...)
		vaults[name] = v
	}
	// One CA Secret trusts both, so that only the address changes.
	if err := s.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "vaultkms-system", Name: "vault-db-ca"},
		Data: map[string][]byte{"ca.crt": cas}}); err != nil {
		t.Fatal(err)
	}
	var cvc v1alpha1.ClusterVaultConnection
	s.applyObject(t, fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: ClusterVaultConnection
metadata: {name: db}
spec:
  address: %s
  caCert: {secretRef: {namespace: vaultkms-system, name: vault-db-ca, key: ca.crt}}
  allowedNamespaces: {}
`, vaults["first"].Addr), &cvc)
	s.applyVaultAuth(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultAuth
metadata: {name: db, namespace: app}
spec:
  kubernetes: {role: app, serviceAccountName: app}
  connectionRef: {name: db}
`)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: moved, namespace: app}
spec:
  authRef: {name: db}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10m
  revokeGracePeriod: 1s
`); err != nil {
		t.Fatal(err)
	}
	vs := s.waitReady(t, "app", "moved", metav1.ConditionTrue, "Synced", 60*time.Second)
	clusterID := func(v *harness.Vault) string {
		h, err := v.Client().Sys().Health()
		if err != nil || h.ClusterID == "" {
			t.Fatalf("cluster ID: %v", err)
		}
		return h.ClusterID
	}
	if vs.Status.Lease == nil || vs.Status.Lease.Vault != clusterID(vaults["first"]) {
		t.Fatalf("the lease does not record the Vault that issued it (cluster %s): %+v", clusterID(vaults["first"]), vs.Status.Lease)
	}
	old := *vs.Status.Lease
	leaseAlive := func(v *harness.Vault, id string) bool {
		_, err := v.Client().Logical().Write("sys/leases/lookup", map[string]any{"lease_id": id})
		return err == nil
	}
	if !leaseAlive(vaults["first"], old.ID) {
		t.Fatal("the first Vault does not know the lease it issued")
	}

	// The same Vault under another name: a new lease is read (the
	// connection's spec changed), and the replaced one is revoked there,
	// since it is the same cluster.
	alias := strings.Replace(vaults["first"].Addr, "127.0.0.1", "localhost", 1)
	s.editConnection(t, "db", func(c *v1alpha1.ClusterVaultConnection) { c.Spec.Address = alias })
	eventually(t, 60*time.Second, func() error {
		st := s.vaultSecret(t, "app", "moved").Status
		c := meta.FindStatusCondition(st.Conditions, "PreviousLeaseRevoked")
		if st.Lease == nil || st.Lease.ID == old.ID || c == nil {
			return errors.New("the lease read under the new address has not replaced the old one yet")
		}
		if c.Status != metav1.ConditionTrue {
			return fmt.Errorf("PreviousLeaseRevoked = %s/%s %q after an address change to the same Vault, want True", c.Status, c.Reason, c.Message)
		}
		return nil
	})
	if leaseAlive(vaults["first"], old.ID) {
		t.Fatal("the lease replaced under the same Vault's other address is still alive")
	}
	old = *s.vaultSecret(t, "app", "moved").Status.Lease

	s.editConnection(t, "db", func(c *v1alpha1.ClusterVaultConnection) { c.Spec.Address = vaults["second"].Addr })
	var st v1alpha1.VaultSecretStatus
	eventually(t, 60*time.Second, func() error {
		st = s.vaultSecret(t, "app", "moved").Status
		c := meta.FindStatusCondition(st.Conditions, "PreviousLeaseRevoked")
		switch {
		case st.Lease == nil || st.Lease.ID == old.ID:
			return errors.New("no new lease from the second Vault yet")
		case c == nil || c.Status == metav1.ConditionTrue:
			return errors.New("the replaced lease's fate is not reported yet")
		}
		return nil
	})
	if st.Lease.Vault != clusterID(vaults["second"]) || !leaseAlive(vaults["second"], st.Lease.ID) {
		t.Fatalf("the new lease %+v is not the second Vault's (the old one was of %q)", st.Lease, old.Vault)
	}
	c := meta.FindStatusCondition(st.Conditions, "PreviousLeaseRevoked")
	if c.Status != metav1.ConditionFalse || c.Reason != "IssuedByAnotherVault" || !strings.Contains(c.Message, old.Vault) {
		t.Fatalf("PreviousLeaseRevoked = %s/%s %q: want False/IssuedByAnotherVault naming %q (the second Vault would have answered the revocation with success)", c.Status, c.Reason, c.Message, old.Vault)
	}
	if !leaseAlive(vaults["first"], old.ID) {
		t.Fatal("the first Vault's lease is gone")
	}
	if n := harness.AuditCountAll(t, audits["second"], "sys/leases/revoke/"+old.ID); n != 0 {
		t.Fatalf("the first Vault's lease id was sent to the second Vault %d times", n)
	}
	s.waitEvent(t, "app", "moved", "LeaseNotRevoked", 10*time.Second)
}
