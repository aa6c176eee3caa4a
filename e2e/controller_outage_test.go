package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
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

// TestVaultSecretVaultOutage: Vault is stopped. A kv VaultSecret with
// expiryPolicy Retain keeps its Secret and data past expiry and reports
// Ready=False Expired, while its Delete twin's Secret is deleted; a
// dynamic VaultSecret deleted meanwhile waits for Vault at most
// --finalizer-timeout (15 s here), then goes with a LeaseNotRevoked event,
// its lease left in Vault to end on its own. When Vault is back, the next
// successful read refreshes the retained Secret.
func TestVaultSecretVaultOutage(t *testing.T) {
	t.Parallel()
	const finalizerTimeout = 15 * time.Second
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t, stackOptions{args: []string{"--finalizer-timeout=" + finalizerTimeout.String()}})
	ctx := context.Background()
	setupDatabase(t, s, pg, "10m", "20m")
	s.v.Policy("kv-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "before-outage-2e7a"}})
	s.role("app", "app", "db-creds,kv-read", nil)
	// Three kv VaultSecrets: retain and switch (Retain, switch later
	// switched to Delete) and delete (the default policy).
	kv := func(name, policy string) string {
		return fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: %s, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 15s
  expiryPolicy: %s
`, name, policy)
	}
	for _, m := range []string{kv("retain", "Retain"), kv("switch", "Retain"), kv("delete", "Delete"), `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10m
`} {
		if _, err := s.apply(t, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"retain", "switch", "delete", "db"} {
		s.waitReady(t, "app", name, metav1.ConditionTrue, "Synced", 60*time.Second)
	}
	lease := s.vaultSecret(t, "app", "db").Status.Lease.ID

	s.v.Stop()
	stoppedAt := time.Now()

	// Deletion during the outage: held while Vault cannot revoke, for
	// at most the finalizer timeout.
	if err := s.c.Delete(ctx, &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"}}); err != nil {
		t.Fatal(err)
	}
	deletedAt := time.Now()
	held := s.waitReady(t, "app", "db", metav1.ConditionFalse, "VaultUnavailable", 30*time.Second)
	if msg := meta.FindStatusCondition(held.Status.Conditions, "Ready").Message; !strings.Contains(msg, "cannot revoke the lease before deletion") {
		t.Fatalf("deletion held without saying why: %q", msg)
	}
	// Leases last 10 min: without the timeout deletion waits that long.
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "db"}, &v1alpha1.VaultSecret{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VaultSecret still exists 90 s after its deletion with --finalizer-timeout=%s (%v)\ncontroller log:\n%s", finalizerTimeout, err, s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("deleted VaultSecret gone %s after its deletion", time.Since(deletedAt).Round(100*time.Millisecond))
	if note := s.waitEvent(t, "app", "db", "LeaseNotRevoked", 30*time.Second); !strings.Contains(note, "lease not revoked") {
		t.Fatalf("LeaseNotRevoked event: %q", note)
	}

	// Past the kv ttl: the Delete twin's Secret is deleted, the retained
	// one stays with its data and says Expired.
	s.waitGone(t, "app", "delete", 60*time.Second)
	vs := s.waitReady(t, "app", "retain", metav1.ConditionFalse, "Expired", 60*time.Second)
	if msg := meta.FindStatusCondition(vs.Status.Conditions, "Ready").Message; !strings.Contains(msg, "expiryPolicy Retain") {
		t.Fatalf("Expired message does not say the Secret was retained: %q", msg)
	}
	sec, err := s.secret("app", "retain")
	if err != nil {
		t.Fatalf("retained Secret deleted: %v", err)
	}
	at, err := time.Parse(time.RFC3339, sec.Annotations["secrets.vaultkms.io/expires-at"])
	if err != nil || !time.Now().After(at) {
		t.Fatalf("retained Secret's expires-at %q not yet past (%v)", sec.Annotations["secrets.vaultkms.io/expires-at"], err)
	}
	if string(sec.Data["password"]) != "before-outage-2e7a" {
		t.Fatal("retained Secret lost its data")
	}
	s.waitEvent(t, "app", "retain", "Expired", 30*time.Second)
	// Switched from Retain to Delete past its expiry: the Secret kept
	// until now goes at once, not at the Expirer's next look hours later.
	s.waitReady(t, "app", "switch", metav1.ConditionFalse, "Expired", 30*time.Second)
	if err := s.c.Patch(ctx, &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "switch"}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"expiryPolicy":"Delete"}}`))); err != nil {
		t.Fatal(err)
	}
	s.waitGone(t, "app", "switch", 30*time.Second)
	t.Logf("Vault down for %s", time.Since(stoppedAt).Round(time.Second))

	// Vault is back: the lease given up at deletion is still there (it
	// was not revoked, as the event said), and a new value reaches the
	// retained Secret with the next successful read.
	s.v.Start()
	s.v.Unseal()
	if !slices.Contains(liveLeases(t, s.v), lease) {
		t.Fatalf("lease %s not in Vault: it was revoked after all, or the test lost it", lease)
	}
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "after-outage-5b90"}})
	s.waitSecret(t, "app", "retain", 5*time.Minute, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "after-outage-5b90" })
	s.waitReady(t, "app", "retain", metav1.ConditionTrue, "Synced", 30*time.Second)
}
