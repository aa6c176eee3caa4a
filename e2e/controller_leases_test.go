package e2e

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// eventReasons lists the reasons of the events about one VaultSecret.
func (s *syncerStack) eventReasons(t *testing.T, ns, name string) []string {
	t.Helper()
	list, err := s.cp.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list events: %v", err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "VaultSecret" && e.Regarding.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

// waitEvent waits until an event with reason is recorded about the
// VaultSecret and returns its note.
func (s *syncerStack) waitEvent(t *testing.T, ns, name, reason string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list, err := s.cp.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list events: %v", err)
		}
		for _, e := range list.Items {
			if e.Regarding.Kind == "VaultSecret" && e.Regarding.Name == name && e.Reason == reason {
				return e.Note
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event about VaultSecret %s/%s within %s (events: %v)\ncontroller log:\n%s", reason, ns, name, timeout, s.eventReasons(t, ns, name), s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hmacKeyID is the key id a status data HMAC names
// ("hmac-sha256:<key id>:<sum>").
func hmacKeyID(t *testing.T, h string) string {
	t.Helper()
	parts := strings.Split(h, ":")
	if len(parts) != 3 || parts[0] != "hmac-sha256" {
		t.Fatalf("status dataHMAC %q is not hmac-sha256:<key id>:<sum>", h)
	}
	return parts[1]
}

// TestVaultSecretLeaseRules proves against a real Vault, PostgreSQL and API
// server three lease rules of the controller: a recreated HMAC key is not
// taken for edited data; a source switched from dynamic to kv revokes the
// lease it held; and a tenant whose policy grants only the body form of
// sys/leases/renew is renewed, while one granted neither form is told
// which policy line is missing.
func TestVaultSecretLeaseRules(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	ctx := context.Background()
	setupDatabase(t, s, pg, "5m", "10m")
	s.v.Policy("kv-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "kv-value-91c3"}})
	// The controller a subtest restarts must outlive the subtest: its
	// cleanup belongs to the whole test.
	whole := t

	t.Run("a recreated HMAC key re-issues nothing and restarts nothing", func(t *testing.T) {
		s.role("keys", "app", "db-creds,kv-read", nil)
		replicas := int32(0)
		labels := map[string]string{"app": "web"}
		if err := s.c.Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}},
		}); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: keys-db, namespace: app}
spec:
  auth: {kubernetes: {role: keys, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10m
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: keys-kv, namespace: app}
spec:
  auth: {kubernetes: {role: keys, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 10m
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`} {
			if _, err := s.apply(t, m); err != nil {
				t.Fatal(err)
			}
		}
		before := map[string]*v1alpha1.VaultSecret{}
		data := map[string]map[string][]byte{}
		for _, name := range []string{"keys-db", "keys-kv"} {
			before[name] = s.waitReady(t, "app", name, metav1.ConditionTrue, "Synced", 60*time.Second)
			sec, err := s.secret("app", name)
			if err != nil {
				t.Fatal(err)
			}
			data[name] = sec.Data
		}
		lease := before["keys-db"].Status.Lease.ID
		leasesBefore := liveLeases(t, s.v)

		// The key Secret is deleted (by mistake, or a namespace restore
		// without it); the next controller process creates a new key.
		if err := s.c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "vaultkms-system", Name: "vaultkms-hmac-key"}}); err != nil {
			t.Fatalf("delete the HMAC key Secret: %v", err)
		}
		s.restartController(whole)
		deadline := time.Now().Add(60 * time.Second)
		for _, name := range []string{"keys-db", "keys-kv"} {
			old := hmacKeyID(t, before[name].Status.DataHMAC)
			for {
				vs := s.vaultSecret(t, "app", name)
				if hmacKeyID(t, vs.Status.DataHMAC) != old {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: status dataHMAC still names the deleted key after 60 s\ncontroller log:\n%s", name, s.log.String())
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		for _, name := range []string{"keys-db", "keys-kv"} {
			sec, err := s.secret("app", name)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range data[name] {
				if !bytes.Equal(sec.Data[k], v) {
					t.Errorf("%s: Secret key %q changed after the HMAC key was recreated", name, k)
				}
			}
			for _, r := range s.eventReasons(t, "app", name) {
				if r == "Rotated" || r == "Restored" || r == "Restarted" {
					t.Errorf("%s: event %s after the HMAC key was recreated", name, r)
				}
			}
		}
		if vs := s.vaultSecret(t, "app", "keys-db"); vs.Status.Lease == nil || vs.Status.Lease.ID != lease || vs.Status.PendingLease != nil {
			t.Errorf("keys-db: lease %v (pending %v), want %s kept", vs.Status.Lease, vs.Status.PendingLease, lease)
		}
		if after := liveLeases(t, s.v); strings.Join(after, ",") != strings.Join(leasesBefore, ",") {
			t.Errorf("leases in Vault changed: %v, then %v", leasesBefore, after)
		}
		var dep appsv1.Deployment
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "web"}, &dep); err != nil {
			t.Fatal(err)
		}
		if at := dep.Spec.Template.Annotations["secrets.vaultkms.io/restartedAt"]; at != "" {
			t.Errorf("the rollout target was restarted at %s", at)
		}
	})

	t.Run("switching from dynamic to kv revokes the lease", func(t *testing.T) {
		s.cp.Namespace("switch", "app")
		s.role("switch", "switch", "db-creds,kv-read", nil)
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: sw, namespace: switch}
spec:
  auth: {kubernetes: {role: switch, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10m
`); err != nil {
			t.Fatal(err)
		}
		vs := s.waitReady(t, "switch", "sw", metav1.ConditionTrue, "Synced", 60*time.Second)
		lease := vs.Status.Lease.ID
		sec, err := s.secret("switch", "sw")
		if err != nil {
			t.Fatal(err)
		}
		user := string(sec.Data["username"])
		if !slices.Contains(liveLeases(t, s.v), lease) || !roleExists(t, pg, user) {
			t.Fatalf("lease %s or its database user is not live after the issue", lease)
		}
		patch := []byte(`{"spec":{"source":{"dynamic":null,"kv":{"mount":"secret","path":"app/config"}}}}`)
		if err := s.c.Patch(ctx, vs, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatalf("switch the source: %v", err)
		}
		vs = s.waitReady(t, "switch", "sw", metav1.ConditionTrue, "Synced", 60*time.Second)
		s.waitSecret(t, "switch", "sw", 10*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "kv-value-91c3" })
		if vs.Status.Lease != nil || vs.Status.PendingLease != nil {
			t.Fatalf("a kv source still records leases: %+v, pending %+v", vs.Status.Lease, vs.Status.PendingLease)
		}
		// Revoked in Vault, not just forgotten: the lease is gone from
		// sys/leases/lookup and its database user from PostgreSQL.
		deadline := time.Now().Add(30 * time.Second)
		for slices.Contains(liveLeases(t, s.v), lease) || roleExists(t, pg, user) {
			if time.Now().After(deadline) {
				t.Fatalf("lease %s (database user %s) still live 30 s after the switch to kv\ncontroller log:\n%s", lease, user, s.log.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("renewal with the body form of sys/leases/renew", func(t *testing.T) {
		// A role of its own with 15 s leases, renewed within the test.
		s.v.Write("database/config/pg", map[string]any{
			"plugin_name": "postgresql-database-plugin", "connection_url": pg.URL(),
			"username": "postgres", "password": pg.Password, "allowed_roles": "app,body",
		})
		s.v.Write("database/roles/body", map[string]any{
			"db_name":             "pg",
			"creation_statements": `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
			"default_ttl":         "15s", "max_ttl": "10m",
		})
		// Vault's documented policy: the body form only.
		s.v.Policy("db-body", `
path "database/creds/body"                     { capabilities = ["read"] }
path "sys/leases/renew"                        { capabilities = ["update"] }
path "sys/leases/revoke/database/creds/body/*" { capabilities = ["update"] }
`)
		// Neither form.
		s.v.Policy("db-norenew", `
path "database/creds/body"                     { capabilities = ["read"] }
path "sys/leases/revoke/database/creds/body/*" { capabilities = ["update"] }
`)
		s.cp.Namespace("body", "app")
		s.cp.Namespace("norenew", "app")
		// Without Vault's default policy, which grants the body form to
		// every token: only the policies above decide.
		noDefault := map[string]any{"token_no_default_policy": true}
		s.role("body", "body", "db-body", noDefault)
		s.role("norenew", "norenew", "db-norenew", noDefault)
		for _, ns := range []string{"body", "norenew"} {
			if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db, namespace: `+ns+`}
spec:
  auth: {kubernetes: {role: `+ns+`, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/body}}
  ttl: 10m
`); err != nil {
				t.Fatal(err)
			}
		}
		first := s.waitReady(t, "body", "db", metav1.ConditionTrue, "Synced", 60*time.Second)
		sec, err := s.secret("body", "db")
		if err != nil {
			t.Fatal(err)
		}
		user := string(sec.Data["username"])
		// Renewed: the same lease lives on past its first 15 s.
		deadline := time.Now().Add(60 * time.Second)
		for {
			vs := s.vaultSecret(t, "body", "db")
			if c := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); c != nil && c.Reason == "RenewDenied" {
				t.Fatalf("the body form was granted, yet RenewDenied: %s", c.Message)
			}
			if vs.Status.Lease == nil || vs.Status.Lease.ID != first.Status.Lease.ID {
				t.Fatalf("new credentials instead of a renewal: lease %v, first %s\ncontroller log:\n%s", vs.Status.Lease, first.Status.Lease.ID, s.log.String())
			}
			if vs.Status.Lease.ExpiresAt.After(first.Status.Lease.ExpiresAt.Time) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lease not renewed within 60 s: %+v\ncontroller log:\n%s", vs.Status.Lease, s.log.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
		sec, err = s.secret("body", "db")
		if err != nil || string(sec.Data["username"]) != user || !roleExists(t, pg, user) {
			t.Fatalf("after the renewal the Secret holds %q (%v), want the first user %q, still in PostgreSQL", sec.Data["username"], err, user)
		}

		// Neither form: Ready=False RenewDenied naming the policy line,
		// and an event saying the same.
		vs := s.waitReady(t, "norenew", "db", metav1.ConditionFalse, "RenewDenied", 60*time.Second)
		const line = `path "sys/leases/renew/database/creds/body/*" { capabilities = ["update"] }`
		if msg := meta.FindStatusCondition(vs.Status.Conditions, "Ready").Message; !strings.Contains(msg, line) {
			t.Fatalf("RenewDenied message does not name the policy line %s: %q", line, msg)
		}
		if note := s.waitEvent(t, "norenew", "db", "RenewDenied", 30*time.Second); !strings.Contains(note, line) {
			t.Fatalf("RenewDenied event does not name the policy line: %q", note)
		}
	})
}
