package syncer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// TestDeletionRevokesEveryLeaseItMay: a VaultSecret holding two sources'
// leases, whose tenant policy allows revoking the second's only. Deletion
// revokes the second although the first is refused (the first refusal
// used to end the loop and leave every later lease alive), and counts one
// lease not revoked, not one VaultSecret.
func TestDeletionRevokesEveryLeaseItMay(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Vault server of make tools")
	}
	lv := startLeasingVault(t, "b", "a", "b")
	base := lv.base
	leases := map[string]string{"a": lv.issue("a"), "b": lv.issue("b")}

	now := time.Now().Truncate(time.Second)
	lease := func(id string) v1alpha1.LeaseJournal {
		return v1alpha1.LeaseJournal{Lease: &v1alpha1.Lease{ID: id, IssuedAt: metav1.NewTime(now), ExpiresAt: metav1.NewTime(now.Add(10 * time.Minute))}}
	}
	vs := appRoleVaultSecret("certs")
	vs.Spec.Source = v1alpha1.Source{}
	vs.Spec.Sources = []v1alpha1.Source{
		{Dynamic: &v1alpha1.DynamicSource{Mount: "pki", Path: "issue/a"}},
		{Dynamic: &v1alpha1.DynamicSource{Mount: "pki", Path: "issue/b"}},
	}
	vs.Status.Sources = []v1alpha1.SourceStatus{{Hash: "a", LeaseJournal: lease(leases["a"])}, {Hash: "b", LeaseJournal: lease(leases["b"])}}
	vs.Finalizers = []string{Finalizer}
	vs.DeletionTimestamp = &metav1.Time{Time: now}
	r, _, rec := fairnessReconciler(t, now, base, vs, lv.creds())
	m := NewMetrics(prometheus.NewRegistry())
	r.finalizer.Metrics = m

	key := client.ObjectKeyFromObject(vs)
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.VaultSecret
	if err := r.Client.Get(context.Background(), key, &got); err == nil && len(got.Finalizers) > 0 {
		t.Fatalf("finalizer kept after a refused revocation: %v", got.Finalizers)
	}
	alive := lv.alive
	if alive(leases["b"]) {
		t.Errorf("source 1's lease is alive after deletion: the refusal of source 0's revocation spared it")
	}
	if !alive(leases["a"]) {
		t.Errorf("source 0's lease is gone although its revocation was refused (the test's policy is wrong)")
	}
	if n := testutil.ToFloat64(m.notRevoked); n != 1 {
		t.Errorf("vaultkms_controller_leases_not_revoked_total = %v, want 1 (one lease)", n)
	}
	select {
	case e := <-rec.Events:
		if !strings.Contains(e, "LeaseNotRevoked") || !strings.Contains(e, "lease not revoked") {
			t.Errorf("event %q, want LeaseNotRevoked for one lease", e)
		}
	default:
		t.Error("no LeaseNotRevoked event")
	}
}

// TestLeaseOfAnotherVaultIsNeverSentThere: leases recorded as issued by
// another Vault (their connection's address changed since) are never sent
// to the Vault the connection points to now, which would not know them
// and would answer their revocation with success. Deletion revokes the
// lease of this Vault, leaves the other to end on its own, and counts and
// tells it; a replaced lease of the other Vault due for revocation is
// reported the same way.
func TestLeaseOfAnotherVaultIsNeverSentThere(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Vault server of make tools")
	}
	lv := startLeasingVault(t, "a", "a")
	v, base, creds := lv.v, lv.base, lv.creds
	issue := func() string { return lv.issue("a") }
	alive := lv.alive
	const otherVault = "6a1f0c2e-5b7d-4e2a-9c3b-8d4e5f6a7b8c"
	h, err := v.Client().Sys().Health()
	if err != nil || h.ClusterID == "" {
		t.Fatalf("this Vault's cluster ID: %v", err)
	}
	thisVault := h.ClusterID
	now := time.Now().Truncate(time.Second)
	lease := func(id, vaultName string) *v1alpha1.Lease {
		return &v1alpha1.Lease{ID: id, IssuedAt: metav1.NewTime(now), ExpiresAt: metav1.NewTime(now.Add(10 * time.Minute)), Vault: vaultName}
	}
	leasedVaultSecret := func(name string) *v1alpha1.VaultSecret {
		vs := appRoleVaultSecret(name)
		vs.Spec.Source = v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "pki", Path: "issue/a"}}
		vs.Finalizers = []string{Finalizer}
		return vs
	}

	// replacing is a VaultSecret whose current lease is this Vault's and
	// whose replaced one, due for revocation, the other Vault's.
	replacing := func(name string) (*v1alpha1.VaultSecret, string) {
		current, previous := issue(), issue()
		vs := leasedVaultSecret(name)
		l := lease(current, thisVault)
		l.PreviousID, l.PreviousVault = previous, otherVault
		l.RevokePreviousAt, l.PreviousExpiresAt = ptrTime(now.Add(-time.Second)), ptrTime(now.Add(10*time.Minute))
		vs.Status.Lease = l
		return vs, previous
	}

	t.Run("deletion", func(t *testing.T) {
		here, there := issue(), issue()
		vs := leasedVaultSecret("deleted")
		vs.Status.Sources = []v1alpha1.SourceStatus{{Hash: "a", LeaseJournal: v1alpha1.LeaseJournal{Lease: lease(here, thisVault)}},
			{Hash: "b", LeaseJournal: v1alpha1.LeaseJournal{Lease: lease(there, otherVault)}}}
		vs.DeletionTimestamp = &metav1.Time{Time: now}
		r, _, rec := fairnessReconciler(t, now, base, vs, creds())
		m := NewMetrics(prometheus.NewRegistry())
		r.finalizer.Metrics = m
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(vs)}); err != nil {
			t.Fatal(err)
		}
		if alive(here) {
			t.Error("the lease of the connection's Vault is alive after deletion")
		}
		if !alive(there) {
			t.Error("the lease recorded as another Vault's was revoked here: it was sent to a Vault that did not issue it")
		}
		if n := testutil.ToFloat64(m.notRevoked); n != 1 {
			t.Errorf("vaultkms_controller_leases_not_revoked_total = %v, want 1", n)
		}
		select {
		case e := <-rec.Events:
			if !strings.Contains(e, "LeaseNotRevoked") || !strings.Contains(e, otherVault) {
				t.Errorf("event %q, want LeaseNotRevoked naming the Vault that issued the lease", e)
			}
		default:
			t.Error("no LeaseNotRevoked event")
		}
	})

	// A deletion retried because the finalizer's removal failed once
	// tries the lease again, and tells it once.
	t.Run("deletion retried", func(t *testing.T) {
		there := issue()
		vs := leasedVaultSecret("retried")
		vs.Status.Lease = lease(there, otherVault)
		vs.DeletionTimestamp = &metav1.Time{Time: now}
		failOnce := true
		r, _, rec := fairnessReconcilerWith(t, now, interceptor.Funcs{
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				if _, ok := obj.(*v1alpha1.VaultSecret); ok && failOnce {
					failOnce = false
					return errors.New("the API server failed once")
				}
				return c.Update(ctx, obj, opts...)
			}}, base, vs, creds())
		m := NewMetrics(prometheus.NewRegistry())
		r.finalizer.Metrics = m
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(vs)}
		if _, err := r.Reconcile(context.Background(), req); err == nil {
			t.Fatal("the failed finalizer removal was not reported")
		}
		if _, err := r.Reconcile(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if n := testutil.ToFloat64(m.notRevoked); n != 1 {
			t.Errorf("vaultkms_controller_leases_not_revoked_total = %v after a retried deletion, want 1", n)
		}
		if n := len(rec.Events); n != 1 {
			t.Errorf("%d LeaseNotRevoked events, want 1", n)
		}
	})

	t.Run("replaced", func(t *testing.T) {
		vs, previous := replacing("replaced")
		r, _, _ := fairnessReconciler(t, now, base, vs, creds())
		m := NewMetrics(prometheus.NewRegistry())
		r.Metrics = m
		key := client.ObjectKeyFromObject(vs)
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		if !alive(previous) {
			t.Error("the replaced lease recorded as another Vault's was revoked here")
		}
		var got v1alpha1.VaultSecret
		if err := r.Client.Get(context.Background(), key, &got); err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(got.Status.Conditions, ConditionPreviousRevoked)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonIssuedElsewhere {
			t.Errorf("condition %s = %+v, want False/%s", ConditionPreviousRevoked, c, ReasonIssuedElsewhere)
		}
		if got.Status.Lease != nil && got.Status.Lease.PreviousID == previous {
			t.Error("the replaced lease is still scheduled: it would be tried again at every pass")
		}
		if n := testutil.ToFloat64(m.notRevoked); n != 1 {
			t.Errorf("vaultkms_controller_leases_not_revoked_total = %v, want 1", n)
		}
	})

	// The pass that finds the replaced lease another Vault's loses its
	// status write: the next finds it still scheduled and tries again; it
	// is told once.
	t.Run("replaced, status write lost", func(t *testing.T) {
		vs, previous := replacing("replaced-lost")
		failOnce := true
		r, _, rec := fairnessReconcilerWith(t, now, interceptor.Funcs{
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				if failOnce {
					failOnce = false
					return errors.New("the API server failed once")
				}
				return c.SubResource(sub).Update(ctx, obj, opts...)
			}}, base, vs, creds())
		m := NewMetrics(prometheus.NewRegistry())
		r.Metrics = m
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(vs)}
		if _, err := r.Reconcile(context.Background(), req); err == nil {
			t.Fatal("the failed status write was not reported")
		}
		if _, err := r.Reconcile(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if !alive(previous) {
			t.Error("the replaced lease recorded as another Vault's was revoked here")
		}
		if n := testutil.ToFloat64(m.notRevoked); n != 1 {
			t.Errorf("vaultkms_controller_leases_not_revoked_total = %v after a lost status write, want 1", n)
		}
		notRevoked := 0
		for len(rec.Events) > 0 {
			if e := <-rec.Events; strings.Contains(e, "LeaseNotRevoked") {
				notRevoked++
			}
		}
		if notRevoked != 1 {
			t.Errorf("%d LeaseNotRevoked events, want 1", notRevoked)
		}
	})
}

// leasingVault is a real Vault whose pki roles issue certificates with
// leases, and an AppRole app whose policy may revoke those of one role.
type leasingVault struct {
	t                *testing.T
	v                *harness.Vault
	base             *api.Client
	roleID, secretID string
}

// startLeasingVault starts it with roles, app allowed to revoke the
// leases of role revocable only.
func startLeasingVault(t *testing.T, revocable string, roles ...string) *leasingVault {
	t.Helper()
	v := harness.StartVault(t)
	v.EnableAuth("approle", "approle")
	v.Enable("pki", "pki")
	v.Write("pki/root/generate/internal", map[string]any{"common_name": "test root", "ttl": "1h"})
	for _, role := range roles {
		v.Write("pki/roles/"+role, map[string]any{"allow_any_name": true, "generate_lease": true, "ttl": "10m"})
	}
	v.Policy("revoke", `path "sys/leases/revoke/pki/issue/`+revocable+`/*" { capabilities = ["update"] }`)
	v.Write("auth/approle/role/app", map[string]any{"token_policies": "revoke"})
	lv := &leasingVault{t: t, v: v}
	lv.roleID = v.Read("auth/approle/role/app/role-id").Data["role_id"].(string)
	lv.secretID = v.Write("auth/approle/role/app/secret-id", nil).Data["secret_id"].(string)
	base, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lv.base = base
	return lv
}

// issue issues a certificate of role and returns its lease.
func (lv *leasingVault) issue(role string) string {
	lv.t.Helper()
	id := lv.v.Write("pki/issue/"+role, map[string]any{"common_name": "app.test"}).LeaseID
	if id == "" {
		lv.t.Fatalf("pki/issue/%s gave no lease", role)
	}
	return id
}

// alive tells whether Vault still knows lease id.
func (lv *leasingVault) alive(id string) bool {
	_, err := lv.v.Client().Logical().Write("sys/leases/lookup", map[string]any{"lease_id": id})
	return err == nil
}

// creds is the AppRole Secret appRoleVaultSecret names.
func (lv *leasingVault) creds() *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "approle"},
		Data: map[string][]byte{"role-id": []byte(lv.roleID), "secret-id": []byte(lv.secretID)}}
}
