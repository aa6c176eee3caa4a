package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// leaseExpiry is when Vault says a lease ends, and false when Vault no
// longer knows it (revoked or expired).
func leaseExpiry(t *testing.T, v *harness.Vault, id string) (time.Time, bool) {
	t.Helper()
	sec, err := v.Client().Logical().Write("sys/leases/lookup", map[string]any{"lease_id": id})
	if err != nil || sec == nil {
		return time.Time{}, false
	}
	s, _ := sec.Data["expire_time"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("lease %s: expire_time %q: %v", id, s, err)
	}
	return at, true
}

// sourceLease is the current lease of spec.sources[i], nil for none.
func sourceLease(vs *v1alpha1.VaultSecret, i int) *v1alpha1.Lease {
	if i >= len(vs.Status.Sources) {
		return nil
	}
	return vs.Status.Sources[i].Lease
}

func journals(vs *v1alpha1.VaultSecret) []v1alpha1.LeaseJournal {
	out := make([]v1alpha1.LeaseJournal, 0, len(vs.Status.Sources))
	for _, ss := range vs.Status.Sources {
		out = append(out, ss.LeaseJournal)
	}
	return out
}

// TestVaultSecretSourcesDynamic: database credentials (a Vault lease of
// 15 s) and a kv path in one Secret through spec.sources. The Secret holds
// both and the database user logs in; the lease is renewed in Vault
// without the kv path being read; a new kv value lands without new
// credentials; deleting the VaultSecret revokes the lease (the user is
// gone from PostgreSQL) and the Secret goes.
func TestVaultSecretSourcesDynamic(t *testing.T) {
	t.Parallel()
	s, pg := startDynamicSources(t, "15s")
	ctx := context.Background()
	audit := s.v.EnableFileAudit()
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: app-db, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  sources:
    - dynamic: {mount: database, path: creds/app}
    - kv: {mount: secret, path: app/config}
  ttl: 10m
  refreshInterval: 45s
`); err != nil {
		t.Fatal(err)
	}
	vs := s.waitReady(t, "app", "app-db", metav1.ConditionTrue, "Synced", 60*time.Second)
	sec, err := s.secret("app", "app-db")
	if err != nil {
		t.Fatal(err)
	}
	user := string(sec.Data["username"])
	if user == "" || len(sec.Data["password"]) == 0 || string(sec.Data["apiKey"]) != "k-1" {
		t.Fatalf("Secret keys %v: want the database credentials and the kv key", keys(sec.Data))
	}
	if err := pg.Ping(user, string(sec.Data["password"])); err != nil {
		t.Fatalf("the Secret's database credentials do not log in: %v", err)
	}
	lease := sourceLease(vs, 0)
	if lease == nil || sourceLease(vs, 1) != nil || sec.Annotations["secrets.vaultkms.io/lease-id"] != lease.ID {
		t.Fatalf("status.sources %+v, Secret lease-id %q: want the database lease in sources[0] and in the Secret, none for kv",
			vs.Status.Sources, sec.Annotations["secrets.vaultkms.io/lease-id"])
	}
	if !slices.Contains(vs.Finalizers, "secrets.vaultkms.io/revoke-leases") {
		t.Fatalf("finalizers %v: a VaultSecret with a dynamic source must wait for its revocation", vs.Finalizers)
	}
	kvReadsAt := func() int { return auditReads(t, audit, "secret/data/app/config") }
	issuesAt := func() int { return auditReads(t, audit, "database/creds/app") }
	kvReads, issues := kvReadsAt(), issuesAt()
	kvSynced := vs.Status.Sources[1].LastSyncTime

	// The lease (15 s) is renewed at two thirds of its life; the kv path
	// is not due before 45 s.
	first, ok := leaseExpiry(t, s.v, lease.ID)
	if !ok {
		t.Fatalf("lease %s unknown to Vault after the sync", lease.ID)
	}
	eventually(t, 30*time.Second, func() error {
		if at, ok := leaseExpiry(t, s.v, lease.ID); !ok || !at.After(first) {
			return fmt.Errorf("lease %s not renewed in Vault (expires %s, first %s, live %v)", lease.ID, at, first, ok)
		}
		return nil
	})
	if n := kvReadsAt() - kvReads; n != 0 {
		t.Fatalf("the renewal of the database lease read the kv path %d times", n)
	}
	vs = s.vaultSecret(t, "app", "app-db")
	if l := sourceLease(vs, 0); l == nil || l.ID != lease.ID || issuesAt() != issues {
		t.Fatalf("new credentials instead of a renewal: %+v (%d issues since)", l, issuesAt()-issues)
	}
	if !vs.Status.Sources[1].LastSyncTime.Equal(kvSynced) {
		t.Fatalf("the kv source's schedule moved with the renewal: %s, was %s", vs.Status.Sources[1].LastSyncTime, kvSynced)
	}

	// A new kv value lands at the kv source's refresh; the database
	// credentials stay.
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"apiKey": "k-2"}})
	sec = s.waitSecret(t, "app", "app-db", 70*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["apiKey"]) == "k-2" })
	vs = s.vaultSecret(t, "app", "app-db")
	if string(sec.Data["username"]) != user || sec.Annotations["secrets.vaultkms.io/lease-id"] != lease.ID ||
		sourceLease(vs, 0) == nil || sourceLease(vs, 0).ID != lease.ID || issuesAt() != issues {
		t.Fatalf("the kv refresh changed the database credentials: user %q (was %q), lease %v (was %s), %d issues since",
			sec.Data["username"], user, sourceLease(vs, 0), lease.ID, issuesAt()-issues)
	}
	if err := pg.Ping(user, string(sec.Data["password"])); err != nil {
		t.Fatalf("the database credentials no longer log in after the kv refresh: %v", err)
	}
	current := sourceLease(vs, 0)

	// Deletion revokes the lease before the VaultSecret goes.
	if err := s.c.Delete(ctx, vs); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		err := s.c.Get(ctx, client.ObjectKeyFromObject(vs), &v1alpha1.VaultSecret{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("VaultSecret still there (get: %v)", err)
		}
		return nil
	})
	// Right when the VaultSecret is gone, well before the lease's own end.
	if _, live := leaseExpiry(t, s.v, current.ID); live || roleExists(t, pg, user) {
		t.Fatalf("lease %s (user %s) still live after the deletion", current.ID, user)
	}
	if time.Now().After(current.ExpiresAt.Time) {
		t.Logf("note: the lease's own end (%s) passed before the check", current.ExpiresAt)
	}
	if n := harness.AuditCount(t, audit, "sys/leases/revoke/"+current.ID); n == 0 {
		t.Fatalf("no revocation of %s in Vault's audit log: it ended on its own", current.ID)
	}
	if err := pg.Ping(user, string(sec.Data["password"])); err == nil {
		t.Fatal("the deleted VaultSecret's database user still logs in")
	}
	s.waitGone(t, "app", "app-db", 30*time.Second)
}

// TestVaultSecretSourcesDynamicJournal: a VaultSecret of a dynamic and a
// kv source must issue new credentials while the API server refuses every
// update of its Secret (a ValidatingAdmissionPolicy). The lease the Secret
// holds is never revoked while it holds it, status never calls current a
// lease the Secret does not hold, every live lease is named in status, and
// Ready is never True while the Secret lacks the current credentials or
// holds revoked ones. Once the refusal is lifted the new lease is written,
// becomes current, and only then is the old one revoked, after the grace
// period.
func TestVaultSecretSourcesDynamicJournal(t *testing.T) {
	t.Parallel()
	s, pg := startDynamicSources(t, "5m")
	ctx := context.Background()
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: app-journal, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  sources:
    - kv: {mount: secret, path: app/config}
    - dynamic: {mount: database, path: creds/app}
  ttl: 5m
  revokeGracePeriod: 5s
`); err != nil {
		t.Fatal(err)
	}
	vs := s.waitReady(t, "app", "app-journal", metav1.ConditionTrue, "Synced", 60*time.Second)
	first := sourceLease(vs, 1)
	sec, err := s.secret("app", "app-journal")
	if err != nil || first == nil || sec.Annotations["secrets.vaultkms.io/lease-id"] != first.ID {
		t.Fatalf("the Secret does not name the current lease %+v: %v %v", first, sec.Annotations, err)
	}
	firstUser, firstPassword := string(sec.Data["username"]), string(sec.Data["password"])

	lift := s.refuseSecretWrites(t, "app", "app-journal")
	// A ttl change reads every source again: new credentials are issued
	// and the Secret write is refused.
	patch := []byte(`{"spec":{"ttl":"4m"}}`)
	if err := s.c.Patch(ctx, s.vaultSecret(t, "app", "app-journal"), client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	sawPending := false
	for end := time.Now().Add(25 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		vs := s.vaultSecret(t, "app", "app-journal")
		sec, err := s.secret("app", "app-journal")
		if err != nil {
			t.Fatalf("the Secret is gone: %v", err)
		}
		held := sec.Annotations["secrets.vaultkms.io/lease-id"]
		if held != first.ID {
			t.Fatalf("the Secret was written while the policy refuses it: holds %q", held)
		}
		if l := sourceLease(vs, 1); l == nil || l.ID != held {
			t.Fatalf("status calls current %+v, the Secret holds %q", l, held)
		}
		if len(vs.Status.Sources) > 1 && vs.Status.Sources[1].PendingLease != nil {
			sawPending = true
		}
		if c := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); c != nil && c.Status == metav1.ConditionTrue {
			if c.ObservedGeneration == vs.Generation {
				t.Fatalf("Ready=True for generation %d while its Secret cannot be written: %+v", vs.Generation, c)
			}
			if err := pg.Ping(string(sec.Data["username"]), string(sec.Data["password"])); err != nil {
				t.Fatalf("Ready=True while the Secret's credentials do not log in: %v", err)
			}
		}
		if !slices.Contains(liveLeases(t, s.v), first.ID) || !roleExists(t, pg, firstUser) {
			t.Fatalf("lease %s was revoked while the Secret holds it", first.ID)
		}
		if m := s.unrecorded(t, "app", "app-journal"); len(m) > 0 {
			t.Fatalf("leases alive in Vault and named nowhere in status: %v", m)
		}
	}
	if !sawPending {
		t.Fatal("no pending lease seen: the test did not make the controller issue new credentials")
	}
	s.waitReady(t, "app", "app-journal", metav1.ConditionFalse, "SecretWriteFailed", 5*time.Second)

	lift()
	vs = s.waitReady(t, "app", "app-journal", metav1.ConditionTrue, "Synced", 60*time.Second)
	sec, _ = s.secret("app", "app-journal")
	cur := sourceLease(vs, 1)
	if cur == nil || cur.ID == first.ID || sec.Annotations["secrets.vaultkms.io/lease-id"] != cur.ID || vs.Status.Sources[1].PendingLease != nil {
		t.Fatalf("after the refusal: status %+v, Secret holds %q", vs.Status.Sources, sec.Annotations["secrets.vaultkms.io/lease-id"])
	}
	if err := pg.Ping(string(sec.Data["username"]), string(sec.Data["password"])); err != nil {
		t.Fatalf("the Secret's new credentials do not log in: %v", err)
	}
	// The replaced lease goes once the Secret holds the new one, after the
	// 5 s grace period; the new credentials keep working.
	eventually(t, 30*time.Second, func() error {
		if slices.Contains(liveLeases(t, s.v), first.ID) || roleExists(t, pg, firstUser) {
			return fmt.Errorf("replaced lease %s (user %s) still live", first.ID, firstUser)
		}
		return nil
	})
	if err := pg.Ping(firstUser, firstPassword); err == nil {
		t.Fatal("the replaced credentials still log in")
	}
	vs = s.vaultSecret(t, "app", "app-journal")
	sec, _ = s.secret("app", "app-journal")
	if c := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready after the revocation of the replaced lease: %+v", c)
	}
	if err := pg.Ping(string(sec.Data["username"]), string(sec.Data["password"])); err != nil {
		t.Fatalf("Ready=True while the Secret's credentials do not log in: %v", err)
	}
}

// startDynamicSources is a syncer stack with a PostgreSQL secrets engine
// whose leases last leaseTTL, a kv path, and a role "app" in namespace app
// that may read both.
func startDynamicSources(t *testing.T, leaseTTL string) (*syncerStack, *harness.Postgres) {
	t.Helper()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	setupDatabase(t, s, pg, leaseTTL, "10m")
	s.v.Policy("kv-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "db-creds,kv-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"apiKey": "k-1"}})
	return s, pg
}
