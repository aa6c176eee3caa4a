package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// refuseSecretWrites makes the real API server refuse creates and updates
// of one Secret in namespace ns, with a ValidatingAdmissionPolicy, until
// the returned function deletes its binding.
func (s *syncerStack) refuseSecretWrites(t *testing.T, ns, name string) (lift func()) {
	t.Helper()
	return s.refuseWrites(t, ns, name, admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}},
		func(ctx context.Context) error {
			probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
			_, err := s.cp.Client.CoreV1().Secrets(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		})
}

// refuseStatusWrites makes the real API server refuse status writes of
// one VaultSecret until the returned function lifts it: the controller's
// status write fails while its Secret writes land.
func (s *syncerStack) refuseStatusWrites(t *testing.T, ns, name string) (lift func()) {
	t.Helper()
	rule := admissionv1.Rule{APIGroups: []string{v1alpha1.GroupVersion.Group}, APIVersions: []string{"*"}, Resources: []string{"vaultsecrets/status"}}
	return s.refuseWrites(t, ns, name, rule, func(ctx context.Context) error {
		vs := s.vaultSecret(t, ns, name)
		return s.c.Status().Update(ctx, vs, client.DryRunAll)
	})
}

// refuseWrites refuses creates and updates of the objects named name in
// namespace ns that rule matches, with a ValidatingAdmissionPolicy, and
// returns once probe (a dry-run write) is refused.
func (s *syncerStack) refuseWrites(t *testing.T, ns, name string, rule admissionv1.Rule, probe func(context.Context) error) (lift func()) {
	t.Helper()
	ctx := context.Background()
	policyName := "refuse-" + strings.ReplaceAll(rule.Resources[0], "/", "-") + "-" + name
	pol := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
					Rule:       rule,
				},
			}}},
			Validations: []admissionv1.Validation{{Expression: "object.metadata.name != '" + name + "'", Message: "refused by the test's admission policy"}},
		},
	}
	if _, err := s.cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	bind := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        pol.Name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns},
			}},
		},
	}
	if _, err := s.cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy binding: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := probe(ctx)
		if err != nil && strings.Contains(err.Error(), "refused by the test's admission policy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admission policy is not enforced after 30s (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return func() {
		if err := s.cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, bind.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVaultSecretLeasePendingUntilSecretHoldsIt: a synced dynamic
// VaultSecret must replace its credentials while the API server refuses
// every update of its Secret. The lease the Secret holds is never revoked
// while it holds it, status never calls current a lease the Secret does
// not hold, and Ready is never True for credentials the Secret lacks.
// Once the refusal is lifted the new lease is written, becomes current,
// and only then is the old one scheduled for revocation. Labels and
// annotations of other tools on the Secret stay throughout.
func TestVaultSecretLeasePendingUntilSecretHoldsIt(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	ctx := context.Background()
	setupDatabase(t, s, pg, "5m", "10m")
	s.role("db", "app", "db-creds", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db-journal, namespace: app}
spec:
  auth: {kubernetes: {role: db, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 5m
  revokeGracePeriod: 1m
  target: {labels: {team: a}}
`); err != nil {
		t.Fatal(err)
	}
	vs := s.waitReady(t, "app", "db-journal", metav1.ConditionTrue, "Synced", 60*time.Second)
	first := vs.Status.Lease.ID
	sec, err := s.secret("app", "db-journal")
	if err != nil || sec.Annotations["secrets.vaultkms.io/lease-id"] != first {
		t.Fatalf("the Secret does not name the current lease %q: %v %v", first, sec.Annotations, err)
	}
	// Another tool's label and annotation, as Argo CD sets them.
	sec.Labels["argocd.argoproj.io/instance"] = "shop"
	sec.Annotations["example.com/owner"] = "team-a"
	if err := s.c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}

	lift := s.refuseSecretWrites(t, "app", "db-journal")
	// A cosmetic edit must not touch Vault; a ttl change does: new
	// credentials are issued and the Secret write is refused.
	reads := s.attempts("db-journal")
	patch := []byte(`{"spec":{"target":{"labels":{"team":"b"}}}}`)
	if err := s.c.Patch(ctx, s.vaultSecret(t, "app", "db-journal"), client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if n := s.attempts("db-journal") - reads; n != 0 {
		t.Fatalf("a label change read Vault %d times", n)
	}
	patch = []byte(`{"spec":{"ttl":"4m"}}`)
	if err := s.c.Patch(ctx, s.vaultSecret(t, "app", "db-journal"), client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	sawPending := false
	for end := time.Now().Add(25 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		vs := s.vaultSecret(t, "app", "db-journal")
		sec, err := s.secret("app", "db-journal")
		if err != nil {
			t.Fatalf("the Secret is gone: %v", err)
		}
		held := sec.Annotations["secrets.vaultkms.io/lease-id"]
		if held != first {
			t.Fatalf("the Secret was written while the policy refuses it: holds %q", held)
		}
		if vs.Status.Lease == nil || vs.Status.Lease.ID != held {
			t.Fatalf("status calls current %+v, the Secret holds %q", vs.Status.Lease, held)
		}
		if vs.Status.PendingLease != nil {
			sawPending = true
		}
		if c := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == vs.Generation {
			t.Fatalf("Ready=True for generation %d while its Secret cannot be written: %+v", vs.Generation, c)
		}
		live := map[string]bool{}
		for _, id := range liveLeases(t, s.v) {
			live[id] = true
		}
		if !live[first] {
			t.Fatalf("lease %s was revoked while the Secret holds it", first)
		}
		if m := s.unrecorded(t, "app", "db-journal"); len(m) > 0 {
			t.Fatalf("leases alive in Vault and named nowhere in status: %v", m)
		}
	}
	if !sawPending {
		t.Fatal("no pending lease seen: the test did not make the controller issue new credentials")
	}
	s.waitReady(t, "app", "db-journal", metav1.ConditionFalse, "SecretWriteFailed", 5*time.Second)

	lift()
	vs = s.waitReady(t, "app", "db-journal", metav1.ConditionTrue, "Synced", 60*time.Second)
	sec, _ = s.secret("app", "db-journal")
	if vs.Status.Lease.ID == first || sec.Annotations["secrets.vaultkms.io/lease-id"] != vs.Status.Lease.ID || vs.Status.PendingLease != nil {
		t.Fatalf("after the refusal: status %+v, Secret holds %q", vs.Status.Lease, sec.Annotations["secrets.vaultkms.io/lease-id"])
	}
	if vs.Status.Lease.PreviousID != first || vs.Status.Lease.RevokePreviousAt == nil {
		t.Fatalf("the replaced lease is not scheduled for revocation: %+v", vs.Status.Lease)
	}
	if err := pg.Ping(string(sec.Data["username"]), string(sec.Data["password"])); err != nil {
		t.Fatalf("the Secret's credentials do not log in: %v", err)
	}
	if sec.Labels["argocd.argoproj.io/instance"] != "shop" || sec.Annotations["example.com/owner"] != "team-a" || sec.Labels["team"] != "b" {
		t.Fatalf("metadata after the writes: labels %v annotations %v", sec.Labels, sec.Annotations)
	}
}

// TestRestartAfterALostSecretWrite: new credentials reach the Secret but
// the pass that wrote them never learns it (its answer lost, or its
// process ended before the status write). The next pass promotes the
// pending lease the Secret holds, which schedules the old one for
// revocation; it must also restart the workloads, or the pods go on with
// credentials about to be revoked.
func TestRestartAfterALostSecretWrite(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	ctx := context.Background()
	setupDatabase(t, s, pg, "5m", "10m")
	s.role("db", "app", "db-creds", nil)
	s.createDeployment(t, "app", "web", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db-lost, namespace: app}
spec:
  auth: {kubernetes: {role: db, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 5m
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "app", "db-lost", metav1.ConditionTrue, "Synced", 60*time.Second)
	const restartedAt = "secrets.vaultkms.io/restartedAt"
	if a := s.deployment(t, "app", "web").Spec.Template.Annotations[restartedAt]; a != "" {
		t.Fatalf("the first sync restarted the Deployment (%s)", a)
	}
	// New credentials are issued and recorded as pending; their Secret
	// write is refused.
	lift := s.refuseSecretWrites(t, "app", "db-lost")
	if err := s.c.Patch(ctx, s.vaultSecret(t, "app", "db-lost"), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"ttl":"4m"}}`))); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "app", "db-lost", metav1.ConditionFalse, "SecretWriteFailed", 30*time.Second)
	vs := s.vaultSecret(t, "app", "db-lost")
	if vs.Status.PendingLease == nil {
		t.Fatalf("no pending lease recorded: %+v", vs.Status)
	}
	pending := vs.Status.PendingLease.ID
	// The controller ends; the write it made lands after all (the test
	// writes the Secret as it would have: the pending lease, new data).
	s.ctl.Stop()
	lift()
	// (The lifted policy takes a moment to stop applying.)
	eventually(t, 30*time.Second, func() error {
		sec, err := s.secret("app", "db-lost")
		if err != nil {
			return err
		}
		sec.Annotations["secrets.vaultkms.io/lease-id"] = pending
		sec.Data["password"] = []byte("written-by-the-lost-pass")
		return s.c.Update(ctx, sec)
	})
	s.ctl.Start()
	vs = s.waitReady(t, "app", "db-lost", metav1.ConditionTrue, "Synced", 60*time.Second)
	if vs.Status.Lease == nil || vs.Status.Lease.ID != pending || vs.Status.Lease.RevokePreviousAt == nil {
		t.Fatalf("the pending lease the Secret holds was not promoted: %+v", vs.Status.Lease)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.deployment(t, "app", "web").Spec.Template.Annotations[restartedAt] == "" {
		if time.Now().After(deadline) {
			t.Fatalf("the promotion of new credentials restarted nothing; the old lease is revoked at %s\n%s", vs.Status.Lease.RevokePreviousAt, s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLostStatusWriteIsNotAnEdit: a pass writes new data to the Secret
// and its status write is refused (the real API server, an admission
// policy on vaultsecrets/status), so status still describes the old
// data. The passes that follow must take the Secret's data as the
// controller's own write, recorded from the Secret's write record: no
// "changed by hand" restore, no second certificate, and the rollout
// restart the new data owes carried out once.
func TestLostStatusWriteIsNotAnEdit(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	rootPKI(s.v)
	s.v.Policy("web-pki", `path "pki/issue/web" { capabilities = ["update"] }`)
	s.role("web", "app", "web-pki", nil)
	s.createDeployment(t, "app", "web", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: lost-status, namespace: app}
spec:
  auth: {kubernetes: {role: web, serviceAccountName: app}}
  source: {pki: {mount: pki, role: web, commonName: web.app.svc}}
  ttl: 30m
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "app", "lost-status", metav1.ConditionTrue, "Synced", 60*time.Second)
	serial := func() string {
		sec, err := s.secret("app", "lost-status")
		if err != nil {
			t.Fatal(err)
		}
		return certSerial(t, sec.Data["tls.crt"])
	}
	first := serial()
	before := s.vaultSecret(t, "app", "lost-status").Status

	lift := s.refuseStatusWrites(t, "app", "lost-status")
	s.forceSync(t, "app", "lost-status", "1")
	// The forced read issues a second certificate; its Secret write
	// lands, its status write does not.
	eventually(t, 30*time.Second, func() error {
		if serial() == first {
			return errors.New("the forced sync wrote no new certificate")
		}
		return nil
	})
	second := serial()
	// The controller retries the pass meanwhile (its status write fails
	// each time); none of those passes may take the Secret for edited.
	time.Sleep(5 * time.Second)
	if got := serial(); got != second {
		t.Fatalf("while status writes failed, the certificate written was replaced (%s, then %s): the write was taken for a hand edit", second, got)
	}
	if st := s.vaultSecret(t, "app", "lost-status").Status; st.DataHMAC != before.DataHMAC {
		t.Fatalf("a status write landed through the admission policy")
	}
	lift()
	eventually(t, 30*time.Second, func() error {
		if st := s.vaultSecret(t, "app", "lost-status").Status; st.DataHMAC == before.DataHMAC {
			return errors.New("status still records the data before the forced sync")
		}
		return nil
	})
	if got := serial(); got != second {
		t.Fatalf("recording the write replaced its certificate (%s, then %s)", second, got)
	}
	for _, reason := range s.eventReasons(t, "app", "lost-status") {
		if reason == "Restored" {
			t.Fatalf("the controller's own write was reported as changed by hand (events %v)", s.eventReasons(t, "app", "lost-status"))
		}
	}
	if n := s.attempts("lost-status"); n != 2 {
		t.Fatalf("Vault was read %d times, want 2 (the first sync and the forced one)", n)
	}
	st := s.vaultSecret(t, "app", "lost-status").Status
	if st.SourceHash == before.SourceHash || !meta.IsStatusConditionTrue(st.Conditions, "Ready") {
		t.Fatalf("status after the write was recorded: %+v", st)
	}
	// The new certificate owes the Deployment one restart, not one per
	// pass that retried.
	eventually(t, 60*time.Second, func() error {
		if a := s.deployment(t, "app", "web").Spec.Template.Annotations["secrets.vaultkms.io/restartedAt"]; a == "" {
			return errors.New("the Deployment was not restarted for the new certificate")
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	if g := s.deployment(t, "app", "web").Generation; g != 2 {
		t.Fatalf("the Deployment is at generation %d, want 2 (created, restarted once)", g)
	}
}

// rootPKI mounts pki with a root CA of ten years and the role web, which
// issues certificates for names under svc for up to an hour.
func rootPKI(v *harness.Vault) {
	v.Enable("pki", "pki")
	v.Write("sys/mounts/pki/tune", map[string]any{"max_lease_ttl": "87600h"})
	v.Write("pki/root/generate/internal", map[string]any{"common_name": "vaultkms test root", "ttl": "87600h"})
	v.Write("pki/roles/web", map[string]any{"allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "1h"})
}

// certSerial is the serial number of the first certificate in pemData.
func certSerial(t *testing.T, pemData []byte) string {
	t.Helper()
	b, _ := pem.Decode(pemData)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}
