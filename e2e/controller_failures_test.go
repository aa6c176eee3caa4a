package e2e

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// attempts counts the controller's Vault reads for a VaultSecret whose
// name is unique in the test.
func (s *syncerStack) attempts(name string) int {
	n := 0
	for _, line := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(line, `"reading Vault"`) && strings.Contains(line, name) {
			n++
		}
	}
	return n
}

// TestVaultSecretSpecChangeRetriedPromptly: a VaultSecret that has been
// failing long enough to back off for tens of seconds gets a new spec that
// fails too; its retries start again at 5 s, so a fix in Vault shortly
// after is picked up within seconds, not at the old spec's back-off.
func TestVaultSecretSpecChangeRetriedPromptly(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	ctx := context.Background()
	s.v.Policy("kv-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "kv-read", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: respec, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/missing-1}}
  ttl: 30s
  target: {name: respec}
`); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "app", "respec", metav1.ConditionFalse, "SourceNotFound", 30*time.Second)
	// Back-off is half of how long it has been failing: after 45 s of
	// failures the next retries of this spec are 20 s and more apart.
	time.Sleep(45 * time.Second)
	old := s.attempts("respec")

	patch := []byte(`{"spec":{"source":{"kv":{"mount":"secret","path":"app/missing-2"}}}}`)
	vs := s.vaultSecret(t, "app", "respec")
	if err := s.c.Patch(ctx, vs, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatalf("change the spec: %v", err)
	}
	// The new spec is tried at once and fails, then retried once more.
	deadline := time.Now().Add(20 * time.Second)
	for s.attempts("respec") < old+2 {
		if time.Now().After(deadline) {
			t.Fatalf("the new spec was read %d times within 20s, want 2\ncontroller log:\n%s", s.attempts("respec")-old, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.waitReady(t, "app", "respec", metav1.ConditionFalse, "SourceNotFound", 5*time.Second)
	// Now the new path appears: the next retry, 5 s away, finds it. With
	// the old spec's back-off it would be 20 s and more.
	s.v.Write("secret/data/app/missing-2", map[string]any{"data": map[string]any{"k": "found"}})
	start := time.Now()
	s.waitSecret(t, "app", "respec", 12*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["k"]) == "found" })
	t.Logf("the new spec's value was synced %s after it appeared in Vault (%d reads of the new spec)", time.Since(start).Round(100*time.Millisecond), s.attempts("respec")-old)
}

// liveLeases lists the leases Vault holds under database/creds/app.
func liveLeases(t *testing.T, v *harness.Vault) []string {
	t.Helper()
	sec, err := v.Client().Logical().List("sys/leases/lookup/database/creds/app/")
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	var out []string
	if sec != nil {
		ks, _ := sec.Data["keys"].([]any)
		for _, k := range ks {
			out = append(out, "database/creds/app/"+k.(string))
		}
	}
	sort.Strings(out)
	return out
}

// unrecorded returns the live leases that no lease journal of the
// VaultSecret's status names (pending, current or replaced; spec.source's
// or any of spec.sources'). A lease seen before its status write lands is
// looked at again a moment later: the status write follows the issue
// within milliseconds.
func (s *syncerStack) unrecorded(t *testing.T, ns, name string) []string {
	t.Helper()
	missing := liveLeases(t, s.v)
	for round := 0; round < 2 && len(missing) > 0; round++ {
		if round > 0 {
			time.Sleep(time.Second)
		}
		vs := s.vaultSecret(t, ns, name)
		named := map[string]bool{}
		for _, j := range append([]v1alpha1.LeaseJournal{vs.Status.LeaseJournal}, journals(vs)...) {
			if j.PendingLease != nil {
				named[j.PendingLease.ID] = true
			}
			if j.Lease != nil {
				named[j.Lease.ID], named[j.Lease.PreviousID] = true, true
			}
		}
		live := map[string]bool{}
		for _, id := range liveLeases(t, s.v) {
			live[id] = true
		}
		var still []string
		for _, id := range missing {
			if live[id] && !named[id] {
				still = append(still, id)
			}
		}
		missing = still
	}
	return missing
}

// TestVaultSecretLeaseRecordedBeforeSecret: the Secret write of a dynamic
// VaultSecret is refused (an admission policy, as a webhook or quota would)
// while the controller keeps retrying and issuing credentials. Every lease
// Vault holds is named in the VaultSecret's status at all times, at most two
// are alive (the current one and the replaced one awaiting revocation), the
// failure is Ready=False SecretWriteFailed, and deleting the VaultSecret
// leaves no lease behind.
func TestVaultSecretLeaseRecordedBeforeSecret(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	ctx := context.Background()
	setupDatabase(t, s, pg, "5m", "10m")
	s.role("db", "app", "db-creds", nil)

	// A ValidatingAdmissionPolicy refusing this one Secret in namespace app.
	pol := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "refuse-db-blocked"},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}},
				},
			}}},
			Validations: []admissionv1.Validation{{Expression: "object.metadata.name != 'db-blocked'", Message: "refused by the test's admission policy"}},
		},
	}
	if _, err := s.cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	bind := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "refuse-db-blocked"},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        pol.Name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": "app"},
			}},
		},
	}
	if _, err := s.cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy binding: %v", err)
	}
	// The policy is enforced once the API server has loaded it.
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db-blocked"}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.cp.Client.CoreV1().Secrets("app").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "refused by the test's admission policy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admission policy is not enforced after 30s (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db-blocked, namespace: app}
spec:
  auth: {kubernetes: {role: db, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 5m
  target: {name: db-blocked}
`); err != nil {
		t.Fatal(err)
	}
	vs := s.waitReady(t, "app", "db-blocked", metav1.ConditionFalse, "SecretWriteFailed", 30*time.Second)
	// No lease is current while no Secret holds it. The lease issued for
	// the refused write is recorded as pending, and a later pass that reads
	// the API server and finds no Secret holding it revokes it at once,
	// back-off or not: so the journal names it, or Vault no longer holds it.
	if vs.Status.Lease != nil {
		t.Fatalf("the Secret write failed and status calls a lease current: %+v", vs.Status.Lease)
	}
	if m := s.unrecorded(t, "app", "db-blocked"); len(m) > 0 {
		t.Fatalf("the Secret write failed and leases alive in Vault are named nowhere in status: %v", m)
	}
	if c := vs.Status.Conditions; !strings.Contains(c[0].Message+c[len(c)-1].Message, "refused by the test's admission policy") {
		t.Errorf("Ready does not say why the write failed: %+v", c)
	}

	// Retries issue new credentials; watch every lease Vault holds for
	// 20 s (retries 5 s apart and more).
	issued := map[string]bool{}
	reads := s.attempts("db-blocked")
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		live := liveLeases(t, s.v)
		for _, id := range live {
			issued[id] = true
		}
		if len(live) > 2 {
			// A new lease is issued a moment before the oldest is revoked:
			// look again once that moment has passed.
			time.Sleep(time.Second)
			live = liveLeases(t, s.v)
		}
		if len(live) > 2 {
			t.Errorf("%d leases alive at once, want at most 2 (current and replaced): %v", len(live), live)
		}
		if m := s.unrecorded(t, "app", "db-blocked"); len(m) > 0 {
			t.Fatalf("leases alive in Vault and named nowhere in status: %v (status %+v)", m, s.vaultSecret(t, "app", "db-blocked").Status.Lease)
		}
	}
	if len(issued) < 2 {
		t.Fatalf("saw %d leases during the retries; the test wants retries that issue credentials", len(issued))
	}
	reads = s.attempts("db-blocked") - reads
	t.Logf("%d leases seen alive and %d Vault reads in 20 s while the Secret write was refused", len(issued), reads)
	// Retries back off (5 s, then half of how long it has been failing):
	// a handful of reads, not one per status write.
	if reads > 8 {
		t.Errorf("%d Vault reads (each issuing credentials) in 20 s of a refused Secret write; want back-off", reads)
	}

	// Lift the policy: the Secret is written with the recorded lease's
	// credentials.
	if err := s.cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, bind.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	sec := s.waitSecret(t, "app", "db-blocked", 60*time.Second, func(sec *corev1.Secret) bool { return len(sec.Data["username"]) > 0 })
	if err := pg.Ping(string(sec.Data["username"]), string(sec.Data["password"])); err != nil {
		t.Fatalf("the Secret's credentials do not log in: %v", err)
	}
	s.waitReady(t, "app", "db-blocked", metav1.ConditionTrue, "Synced", 10*time.Second)
	if m := s.unrecorded(t, "app", "db-blocked"); len(m) > 0 {
		t.Fatalf("leases alive in Vault and named nowhere in status: %v", m)
	}

	// Deleting the VaultSecret revokes every lease it recorded: none leaked.
	if err := s.c.Delete(ctx, s.vaultSecret(t, "app", "db-blocked")); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		live := liveLeases(t, s.v)
		if len(live) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases still alive 30s after the VaultSecret was deleted: %v\ncontroller log:\n%s", live, s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
