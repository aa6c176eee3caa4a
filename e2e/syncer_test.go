package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

type syncerStack struct {
	v   *harness.Vault
	cp  *harness.ControlPlane
	c   client.Client
	log *harness.SyncBuffer

	ctl        *harness.Controller
	kubeconfig string
	args       []string
	// logs of earlier controller processes, for failure reports.
	oldLogs string
}

// stackOptions vary the stack for a test.
type stackOptions struct {
	// vaultAddr is what the controller is given instead of Vault's own
	// address (a proxy in front of it).
	vaultAddr func(v *harness.Vault) string
	// controllers are further kube-controller-manager controllers.
	controllers []string
	args        []string
	// chartValues are --set values of the chart whose RBAC the
	// controller runs with.
	chartValues []string
	// vault and controlPlane, when set, are used instead of starting new
	// ones (a test whose API server encrypts with a plugin on that Vault).
	vault        *harness.Vault
	controlPlane *harness.ControlPlane
}

// startSyncerStack starts Vault with kubernetes auth reviewing tokens with
// a real API server, kube-controller-manager for garbage collection, and
// the controller as a binary.
func startSyncerStack(t *testing.T, opts ...stackOptions) *syncerStack {
	t.Helper()
	var o stackOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	s := &syncerStack{v: o.vault, cp: o.controlPlane}
	if s.v == nil {
		s.v = harness.StartVault(t)
	}
	if s.cp == nil {
		s.cp = harness.StartControlPlane(t, harness.ControlPlaneOptions{CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	}
	s.cp.StartControllerManager(o.controllers...)
	harness.ConfigureKubernetesAuth(s.v, s.cp, "kubernetes")
	s.cp.Namespace("app", "app")
	s.cp.Namespace("other", "app")
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := appsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(s.cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	s.c = c
	// The controller runs with exactly the chart's RBAC.
	s.kubeconfig = s.cp.ApplyChartRBAC("vaultkms-system", o.chartValues...)
	addr := s.v.Addr
	if o.vaultAddr != nil {
		addr = o.vaultAddr(s.v)
	}
	s.args = append([]string{"--vault-addr=" + addr, "--vault-ca-cert=" + s.v.CA.CertFile, "--namespace=vaultkms-system"}, o.args...)
	s.startController(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s%s", s.oldLogs, s.log.String())
		}
	})
	return s
}

func (s *syncerStack) startController(t *testing.T) {
	t.Helper()
	s.ctl = harness.RunController(t, s.kubeconfig, s.args...)
	s.log = s.ctl.Log
}

// restartController stops the controller process and starts a new one:
// nothing held in memory (tenant tokens, queues) survives.
func (s *syncerStack) restartController(t *testing.T) {
	t.Helper()
	s.ctl.Stop()
	s.oldLogs += s.log.String() + "\n--- restart ---\n"
	s.startController(t)
}

// role writes a kubernetes auth role bound to service account app in
// namespace ns, for tokens with the controller's default audience.
func (s *syncerStack) role(name, ns, policies string, extra map[string]any) {
	body := map[string]any{
		"bound_service_account_names": "app", "bound_service_account_namespaces": ns,
		"token_policies": policies, "token_ttl": "1h", "audience": "vault",
	}
	for k, v := range extra {
		body[k] = v
	}
	s.v.Write("auth/kubernetes/role/"+name, body)
}

// apply creates a VaultSecret from YAML, exactly as a user would write it.
func (s *syncerStack) apply(t *testing.T, manifest string) (*v1alpha1.VaultSecret, error) {
	t.Helper()
	var vs v1alpha1.VaultSecret
	if err := yaml.UnmarshalStrict([]byte(manifest), &vs); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	return &vs, s.c.Create(context.Background(), &vs)
}

func (s *syncerStack) secret(ns, name string) (*corev1.Secret, error) {
	var sec corev1.Secret
	err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &sec)
	return &sec, err
}

func (s *syncerStack) waitSecret(t *testing.T, ns, name string, timeout time.Duration, ok func(*corev1.Secret) bool) *corev1.Secret {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sec, err := s.secret(ns, name)
		if err == nil && ok(sec) {
			return sec
		}
		if time.Now().After(deadline) {
			var vss v1alpha1.VaultSecretList
			s.c.List(context.Background(), &vss, client.InNamespace(ns))
			for _, vs := range vss.Items {
				t.Logf("VaultSecret %s status: %+v", vs.Name, vs.Status.Conditions)
			}
			t.Fatalf("Secret %s/%s not as expected within %s (err %v)\ncontroller log:\n%s", ns, name, timeout, err, s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitGone waits until the Secret is deleted and returns how long it took.
func (s *syncerStack) waitGone(t *testing.T, ns, name string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if _, err := s.secret(ns, name); apierrors.IsNotFound(err) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("Secret %s/%s still exists after %s\ncontroller log:\n%s", ns, name, timeout, s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *syncerStack) waitReady(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string, timeout time.Duration) *v1alpha1.VaultSecret {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var vs v1alpha1.VaultSecret
		err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &vs)
		if err == nil {
			if c := meta.FindStatusCondition(vs.Status.Conditions, "Ready"); c != nil && c.Status == status && c.Reason == reason && c.ObservedGeneration == vs.Generation {
				return &vs
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("VaultSecret %s/%s not Ready=%s/%s within %s: %+v\ncontroller log:\n%s", ns, name, status, reason, timeout, vs.Status.Conditions, s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestVaultSecretKV(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	ctx := context.Background()
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "first-value-4f2a", "user": "svc"}})

	// The README's manifest, as written.
	_, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: app-config, namespace: app}
spec:
  auth:
    kubernetes: {role: app, serviceAccountName: app}   # mount defaults to "kubernetes"
  source:
    kv: {mount: secret, path: app/config}               # KV v2 (v1 also supported); optional version
  ttl: 30s
  target: {name: app-config}
`)
	if err != nil {
		t.Fatalf("create VaultSecret: %v", err)
	}
	sec := s.waitSecret(t, "app", "app-config", 30*time.Second, func(*corev1.Secret) bool { return true })
	if string(sec.Data["password"]) != "first-value-4f2a" || string(sec.Data["user"]) != "svc" {
		t.Fatalf("Secret data %v", keys(sec.Data))
	}
	if sec.Labels["app.kubernetes.io/managed-by"] != "vaultkms" || len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].Kind != "VaultSecret" {
		t.Fatalf("Secret metadata: labels %v owners %v", sec.Labels, sec.OwnerReferences)
	}
	vs := s.waitReady(t, "app", "app-config", metav1.ConditionTrue, "Synced", 10*time.Second)
	exp, err := time.Parse(time.RFC3339, sec.Annotations["secrets.vaultkms.io/expires-at"])
	if err != nil || vs.Status.LastSyncTime == nil {
		t.Fatalf("expires-at %q: %v", sec.Annotations["secrets.vaultkms.io/expires-at"], err)
	}
	if d := exp.Sub(vs.Status.LastSyncTime.Time); d < 29*time.Second || d > 31*time.Second {
		t.Fatalf("expires %s after the read, want 30s", d)
	}
	if !strings.HasPrefix(vs.Status.DataHMAC, "hmac-sha256:") {
		t.Fatalf("status HMAC %q", vs.Status.DataHMAC)
	}

	t.Run("kubectl vaultkms secrets shows the time left", func(t *testing.T) {
		// kubectl get prints a future time in a date column as <invalid>;
		// the plugin computes the time left on the client.
		out, stderr, code := cli(t, "secrets", "--kubeconfig", s.kubeconfig, "-n", "app", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var rows []struct {
			Name     string `json:"name"`
			Ready    string `json:"ready"`
			Secret   string `json:"secret"`
			TimeLeft *int64 `json:"timeLeftSeconds"`
		}
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		found := false
		for _, r := range rows {
			if r.Name != "app-config" {
				continue
			}
			found = true
			if r.Ready != "True" || r.Secret != "app-config" || r.TimeLeft == nil || *r.TimeLeft <= 0 || *r.TimeLeft > 30 {
				t.Fatalf("row %+v, want Ready, Secret app-config, 0 < time left <= 30 s", r)
			}
		}
		if !found {
			t.Fatalf("app-config not listed: %s", out)
		}
		table, _, code := cli(t, "secrets", "--kubeconfig", s.kubeconfig, "-A")
		if code != 0 || !strings.Contains(table, "TIME LEFT") || !strings.Contains(table, "app-config") || strings.Contains(table, "<invalid>") {
			t.Fatalf("exit %d, table:\n%s", code, table)
		}
	})

	t.Run("a change in Vault is followed", func(t *testing.T) {
		s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "second-value-9c1d", "user": "svc"}})
		s.waitSecret(t, "app", "app-config", 40*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "second-value-9c1d" })
	})

	t.Run("a hand edit is restored", func(t *testing.T) {
		sec, _ := s.secret("app", "app-config")
		sec.Data["password"] = []byte("tampered")
		if err := s.c.Update(ctx, sec); err != nil {
			t.Fatal(err)
		}
		s.waitSecret(t, "app", "app-config", 20*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "second-value-9c1d" })
	})

	t.Run("another namespace cannot borrow the role", func(t *testing.T) {
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: stolen, namespace: other}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 30s
`); err != nil {
			t.Fatal(err)
		}
		vs := s.waitReady(t, "other", "stolen", metav1.ConditionFalse, "AuthFailed", 20*time.Second)
		if _, err := s.secret("other", "stolen"); !apierrors.IsNotFound(err) {
			t.Fatalf("a Secret was written in namespace other: %v", err)
		}
		msg := meta.FindStatusCondition(vs.Status.Conditions, "Ready").Message
		if !strings.Contains(msg, "other/app") {
			t.Fatalf("reason does not name the identity used: %q", msg)
		}
	})

	t.Run("appRole credentials from the tenant's own Secret", func(t *testing.T) {
		s.v.EnableAuth("approle", "approle")
		s.v.Write("auth/approle/role/app", map[string]any{"token_policies": "app-read", "token_ttl": "1h"})
		roleID := s.v.Read("auth/approle/role/app/role-id").Data["role_id"].(string)
		secretID := s.v.Write("auth/approle/role/app/secret-id", nil).Data["secret_id"].(string)
		if err := s.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "approle-creds"},
			Data: map[string][]byte{"role-id": []byte(roleID), "secret-id": []byte(secretID)}}); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"via-approle-1", "via-approle-2"} {
			if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: `+name+`, namespace: app}
spec:
  auth: {appRole: {secretRef: approle-creds}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 1m
`); err != nil {
				t.Fatal(err)
			}
			s.waitSecret(t, "app", name, 30*time.Second, func(sec *corev1.Secret) bool { return len(sec.Data["password"]) > 0 })
		}
		if strings.Contains(s.log.String(), secretID) {
			t.Fatal("the AppRole secret ID appeared in the controller's log")
		}
	})

	t.Run("what a VaultSecret stops setting leaves the Secret it created", func(t *testing.T) {
		// The controller creates a new kv VaultSecret's Secret (owning its
		// fields through the create) and applies it after that; a field it
		// stops setting must go all the same, and another tool's stay.
		s.v.Write("secret/data/app/shrink", map[string]any{"data": map[string]any{"a": "1", "b": "2"}})
		for _, name := range []string{"shrink-meta", "shrink-data"} {
			if _, err := s.apply(t, fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: %s, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/shrink}}
  ttl: 1h
  target: {labels: {team: a, tier: web}, annotations: {note: x}}
`, name)); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range []string{"shrink-meta", "shrink-data"} {
			sec := s.waitSecret(t, "app", name, 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["b"]) == "2" })
			if !createdBy(sec, "vaultkms") {
				t.Fatalf("%s: managed fields %+v: the Secret was not created by the controller, so this test proves nothing about taking its fields over", name, managers(sec))
			}
			patch := []byte(`{"metadata":{"labels":{"argocd.argoproj.io/instance":"shop"}}}`)
			if err := s.c.Patch(ctx, sec, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("argocd-controller")); err != nil {
				t.Fatal(err)
			}
		}
		edit := func(name string, f func(*v1alpha1.VaultSecret)) {
			t.Helper()
			eventually(t, 10*time.Second, func() error {
				var vs v1alpha1.VaultSecret
				if err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: name}, &vs); err != nil {
					return err
				}
				f(&vs)
				return s.c.Update(ctx, &vs)
			})
		}
		// Metadata only: no Vault read, and the label and annotation go.
		edit("shrink-meta", func(vs *v1alpha1.VaultSecret) {
			vs.Spec.Target.Labels, vs.Spec.Target.Annotations = map[string]string{"team": "a"}, nil
		})
		sec := s.waitSecret(t, "app", "shrink-meta", 30*time.Second, func(sec *corev1.Secret) bool {
			_, tier := sec.Labels["tier"]
			_, note := sec.Annotations["note"]
			return !tier && !note
		})
		// Data: a key Vault no longer holds goes.
		s.v.Write("secret/data/app/shrink", map[string]any{"data": map[string]any{"a": "1"}})
		edit("shrink-data", func(vs *v1alpha1.VaultSecret) {
			metav1.SetMetaDataAnnotation(&vs.ObjectMeta, "secrets.vaultkms.io/force-sync", "1")
		})
		data := s.waitSecret(t, "app", "shrink-data", 30*time.Second, func(sec *corev1.Secret) bool { _, b := sec.Data["b"]; return !b })
		for _, got := range []*corev1.Secret{sec, data} {
			if got.Labels["argocd.argoproj.io/instance"] != "shop" || got.Labels["team"] != "a" || string(got.Data["a"]) != "1" {
				t.Fatalf("%s: labels %v, data keys %v: another tool's label or the kept fields are gone", got.Name, got.Labels, keys(got.Data))
			}
			if createdBy(got, "vaultkms") {
				t.Fatalf("%s: managed fields %+v still hold the create's entry", got.Name, managers(got))
			}
		}
	})

	t.Run("an unmanaged Secret is never overwritten", func(t *testing.T) {
		taken := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "taken"}, Data: map[string][]byte{"mine": []byte("keep")}}
		if err := s.c.Create(ctx, taken); err != nil {
			t.Fatal(err)
		}
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: wants-taken, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  target: {name: taken}
`); err != nil {
			t.Fatal(err)
		}
		s.waitReady(t, "app", "wants-taken", metav1.ConditionFalse, "SecretConflict", 20*time.Second)
		got, _ := s.secret("app", "taken")
		if string(got.Data["mine"]) != "keep" || len(got.Data) != 1 {
			t.Fatal("the unmanaged Secret was changed")
		}
	})

	t.Run("bad input is rejected at admission, naming the field", func(t *testing.T) {
		cases := map[string]string{
			"two sources": `{apiVersion: secrets.vaultkms.io/v1alpha1, kind: VaultSecret, metadata: {name: bad1, namespace: app},
  spec: {auth: {kubernetes: {role: app, serviceAccountName: app}}, source: {kv: {mount: secret, path: a}, pki: {mount: pki, role: r, commonName: c}}}}`,
			"no auth": `{apiVersion: secrets.vaultkms.io/v1alpha1, kind: VaultSecret, metadata: {name: bad2, namespace: app},
  spec: {auth: {}, source: {kv: {mount: secret, path: a}}}}`,
			"ttl too short": `{apiVersion: secrets.vaultkms.io/v1alpha1, kind: VaultSecret, metadata: {name: bad3, namespace: app},
  spec: {auth: {kubernetes: {role: app, serviceAccountName: app}}, source: {kv: {mount: secret, path: a}}, ttl: 10ms}}`,
			"absolute path": `{apiVersion: secrets.vaultkms.io/v1alpha1, kind: VaultSecret, metadata: {name: bad4, namespace: app},
  spec: {auth: {kubernetes: {role: app, serviceAccountName: app}}, source: {kv: {mount: secret, path: /etc/x}}}}`,
		}
		want := map[string]string{"two sources": "exactly one of kv, dynamic or pki", "no auth": "spec needs one of auth (an inline login) or authRef",
			"ttl too short": "ttl must be between", "absolute path": "spec.source.kv.path"}
		for name, m := range cases {
			_, err := s.apply(t, m)
			if err == nil || !strings.Contains(err.Error(), want[name]) {
				t.Errorf("%s: %v, want a rejection containing %q", name, err, want[name])
			}
		}
	})

	t.Run("keys no Secret can hold are reported, and expiry still applies", func(t *testing.T) {
		s.v.Write("secret/data/app/badkeys", map[string]any{"data": map[string]any{"ok": "1"}})
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: badkeys, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/badkeys}}
  ttl: 10s
`); err != nil {
			t.Fatal(err)
		}
		s.waitReady(t, "app", "badkeys", metav1.ConditionTrue, "Synced", 30*time.Second)
		s.v.Write("secret/data/app/badkeys", map[string]any{"data": map[string]any{"not valid/key": "x"}})
		s.waitReady(t, "app", "badkeys", metav1.ConditionFalse, "InvalidSpec", 30*time.Second)
		s.waitGone(t, "app", "badkeys", 30*time.Second)
	})

	t.Run("a type change replaces the Secret; a rename removes the old one", func(t *testing.T) {
		s.v.Write("secret/data/app/login", map[string]any{"data": map[string]any{"username": "u", "password": "login-pw-3c"}})
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: login, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/login}}
  ttl: 1m
`); err != nil {
			t.Fatal(err)
		}
		s.waitSecret(t, "app", "login", 30*time.Second, func(sec *corev1.Secret) bool { return sec.Type == corev1.SecretTypeOpaque })
		edit := func(f func(*v1alpha1.VaultSecret)) {
			t.Helper()
			for {
				var vs v1alpha1.VaultSecret
				if err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "login"}, &vs); err != nil {
					t.Fatal(err)
				}
				f(&vs)
				err := s.c.Update(ctx, &vs)
				if err == nil {
					return
				}
				if !apierrors.IsConflict(err) {
					t.Fatal(err)
				}
			}
		}
		edit(func(vs *v1alpha1.VaultSecret) { vs.Spec.Target.Type = string(corev1.SecretTypeBasicAuth) })
		s.waitSecret(t, "app", "login", 30*time.Second, func(sec *corev1.Secret) bool { return sec.Type == corev1.SecretTypeBasicAuth })
		s.waitReady(t, "app", "login", metav1.ConditionTrue, "Synced", 10*time.Second)
		edit(func(vs *v1alpha1.VaultSecret) { vs.Spec.Target.Name = "login-renamed" })
		s.waitSecret(t, "app", "login-renamed", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "login-pw-3c" })
		s.waitGone(t, "app", "login", 30*time.Second)
	})

	t.Run("deleted at expiry while Vault is down, back when it returns", func(t *testing.T) {
		s.v.Stop()
		if took := s.waitGone(t, "app", "app-config", 60*time.Second); took > 35*time.Second {
			t.Fatalf("deleted %s after Vault stopped; ttl is 30s", took)
		}
		s.waitReady(t, "app", "app-config", metav1.ConditionFalse, "Expired", 10*time.Second)
		s.v.Start()
		s.v.Unseal()
		s.waitSecret(t, "app", "app-config", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "second-value-9c1d" })
	})

	t.Run("deleting the VaultSecret removes its Secret", func(t *testing.T) {
		vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "app-config"}}
		if err := s.c.Delete(ctx, vs); err != nil {
			t.Fatal(err)
		}
		s.waitGone(t, "app", "app-config", 30*time.Second)
	})

	for _, leak := range []string{"first-value-4f2a", "second-value-9c1d", s.v.RootToken} {
		if strings.Contains(s.log.String(), leak) {
			t.Fatalf("a secret value or token appeared in the controller's log")
		}
	}
}

func TestVaultSecretPKI(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	s.v.Enable("pki", "pki")
	s.v.Write("pki/config/urls", map[string]any{"issuing_certificates": s.v.Addr + "/v1/pki/ca"})
	s.v.Write("sys/mounts/pki/tune", map[string]any{"max_lease_ttl": "87600h"})
	s.v.Write("pki/root/generate/internal", map[string]any{"common_name": "vaultkms test root", "ttl": "87600h"})
	// Certificates come from an intermediate whose chain, as Vault holds
	// it, ends in the root: tls.crt must carry the intermediate but not
	// the root.
	s.v.Enable("pki_int", "pki")
	s.v.Write("sys/mounts/pki_int/tune", map[string]any{"max_lease_ttl": "43800h"})
	csr := s.v.Write("pki_int/intermediate/generate/internal", map[string]any{"common_name": "vaultkms test intermediate"}).Data["csr"].(string)
	signed := s.v.Write("pki/root/sign-intermediate", map[string]any{"csr": csr, "format": "pem_bundle", "ttl": "43800h"}).Data["certificate"].(string)
	s.v.Write("pki_int/intermediate/set-signed", map[string]any{"certificate": signed})
	rootPEM := s.v.Read("pki/cert/ca").Data["certificate"].(string)
	s.v.Write("pki_int/roles/web", map[string]any{"allowed_domains": "svc,svc.cluster.local", "allow_subdomains": true, "max_ttl": "1h"})
	s.v.Policy("web-pki", `path "pki_int/issue/web" { capabilities = ["update"] }`)
	// A Deployment to restart when the certificate is re-issued.
	replicas := int32(0)
	labels := map[string]string{"app": "web"}
	if err := s.c.Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}},
	}); err != nil {
		t.Fatal(err)
	}
	s.role("web", "app", "web-pki", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: web-tls, namespace: app}
spec:
  auth: {kubernetes: {role: web, serviceAccountName: app}}
  source: {pki: {mount: pki_int, role: web, commonName: web.app.svc, altNames: [web.app.svc.cluster.local]}}
  ttl: 30s
  target:
    template: {bundle.pem: "{{ index . \"tls.crt\" }}{{ index . \"ca.crt\" }}"}
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`); err != nil {
		t.Fatal(err)
	}
	parse := func(sec *corev1.Secret) *x509.Certificate {
		b, _ := pem.Decode(sec.Data["tls.crt"])
		if b == nil {
			t.Fatal("tls.crt holds no PEM certificate")
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	sec := s.waitSecret(t, "app", "web-tls", 30*time.Second, func(*corev1.Secret) bool { return true })
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data["tls.key"]) == 0 || len(sec.Data["ca.crt"]) == 0 {
		t.Fatalf("Secret type %s keys %v", sec.Type, keys(sec.Data))
	}
	cert := parse(sec)
	if cert.Subject.CommonName != "web.app.svc" || len(cert.DNSNames) < 2 {
		t.Fatalf("certificate for %q %v", cert.Subject.CommonName, cert.DNSNames)
	}
	var chain []*x509.Certificate
	for rest := sec.Data["tls.crt"]; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	rootBlock, _ := pem.Decode([]byte(rootPEM))
	caBlock, _ := pem.Decode(sec.Data["ca.crt"])
	if len(chain) != 2 || chain[1].Subject.CommonName != "vaultkms test intermediate" {
		t.Fatalf("tls.crt holds %d certificates, want the leaf then the intermediate", len(chain))
	}
	if caBlock == nil || string(caBlock.Bytes) != string(chain[1].Raw) || rootBlock == nil || string(chain[1].Raw) == string(rootBlock.Bytes) {
		t.Fatal("ca.crt is not the issuing intermediate")
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < 25*time.Second || life > 35*time.Second+time.Minute {
		t.Fatalf("certificate lives %s, asked 30s", life)
	}
	exp, _ := time.Parse(time.RFC3339, sec.Annotations["secrets.vaultkms.io/expires-at"])
	if !exp.Equal(cert.NotAfter.Truncate(time.Second)) {
		t.Fatalf("expires-at %s, certificate NotAfter %s", exp, cert.NotAfter)
	}
	// Re-issued at two thirds of its life, before it expires.
	next := s.waitSecret(t, "app", "web-tls", 40*time.Second, func(sec *corev1.Secret) bool { return parse(sec).SerialNumber.Cmp(cert.SerialNumber) != 0 })
	if time.Now().After(cert.NotAfter) {
		t.Fatal("re-issued only after the old certificate expired")
	}
	if parse(next).NotAfter.Before(cert.NotAfter) {
		t.Fatal("the new certificate ends before the old one")
	}
	if want := string(next.Data["tls.crt"]) + string(next.Data["ca.crt"]); string(next.Data["bundle.pem"]) != want {
		t.Fatal("templated bundle.pem is not tls.crt followed by ca.crt")
	}
	// The restart follows the Secret's write (it is made once the Secret is
	// read back holding the new data), so wait for it rather than read once.
	eventually(t, 20*time.Second, func() error {
		var dep appsv1.Deployment
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: "app", Name: "web"}, &dep); err != nil {
			return err
		}
		if dep.Spec.Template.Annotations["secrets.vaultkms.io/restartedAt"] == "" {
			return errors.New("rollout target not restarted after the certificate changed")
		}
		return nil
	})
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestVaultSecretDynamicPostgres(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	ctx := context.Background()
	s.v.Enable("database", "database")
	s.v.Write("database/config/pg", map[string]any{
		"plugin_name": "postgresql-database-plugin", "connection_url": pg.URL(),
		"username": "postgres", "password": pg.Password, "allowed_roles": "app",
	})
	// Short lifetimes: default 10s, at most 30s, so renewals and a
	// rotation happen within the test.
	s.v.Write("database/roles/app", map[string]any{
		"db_name":             "pg",
		"creation_statements": `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
		"default_ttl":         "10s", "max_ttl": "30s",
	})
	// The README's lease policy, in path form: the tenant can renew and
	// revoke only leases under its own path.
	s.v.Policy("db-creds", `
path "database/creds/app"                    { capabilities = ["read"] }
path "sys/leases/renew/database/creds/app/*"  { capabilities = ["update"] }
path "sys/leases/revoke/database/creds/app/*" { capabilities = ["update"] }
`)
	s.role("db", "app", "db-creds", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db, namespace: app}
spec:
  auth: {kubernetes: {role: db, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 5m
  revokeGracePeriod: 2s
`); err != nil {
		t.Fatal(err)
	}
	roleExists := func(name string) bool {
		var n int
		if err := pg.Query("postgres", pg.Password, "SELECT count(*) FROM pg_roles WHERE rolname = $1", &n, name); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	sec := s.waitSecret(t, "app", "db", 30*time.Second, func(sec *corev1.Secret) bool { return len(sec.Data["username"]) > 0 })
	user1, pass1 := string(sec.Data["username"]), string(sec.Data["password"])
	if err := pg.Ping(user1, pass1); err != nil {
		t.Fatalf("issued credentials do not log in to PostgreSQL: %v", err)
	}
	vs := s.waitReady(t, "app", "db", metav1.ConditionTrue, "Synced", 10*time.Second)
	t.Logf("lease after issue: %+v", *vs.Status.Lease)
	lease1 := vs.Status.Lease.ID
	if lease1 == "" || !strings.HasPrefix(lease1, "database/creds/app/") {
		t.Fatalf("status lease %+v", vs.Status.Lease)
	}

	// Past the 10s default TTL the same credentials still work: renewed.
	time.Sleep(14 * time.Second)
	sec, _ = s.secret("app", "db")
	if string(sec.Data["username"]) == user1 {
		if err := pg.Ping(user1, pass1); err != nil {
			t.Fatalf("credentials stopped working after the default TTL: not renewed: %v", err)
		}
		var now v1alpha1.VaultSecret
		s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "db"}, &now)
		if now.Status.Lease.ID != lease1 || !now.Status.Lease.ExpiresAt.After(vs.Status.Lease.ExpiresAt.Time) {
			t.Fatalf("lease not renewed: %+v then %+v", vs.Status.Lease, now.Status.Lease)
		}
	} else {
		t.Fatalf("credentials replaced after 14s, before renewals reached the 30s max TTL")
	}

	// Before the 30s max TTL the controller issues new credentials and,
	// after the grace period, revokes the old user.
	sec = s.waitSecret(t, "app", "db", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["username"]) != user1 })
	user2, pass2 := string(sec.Data["username"]), string(sec.Data["password"])
	if err := pg.Ping(user2, pass2); err != nil {
		t.Fatalf("rotated credentials do not log in: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for roleExists(user1) {
		if time.Now().After(deadline) {
			t.Fatalf("old database user %q not revoked after rotation", user1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := pg.Ping(user1, pass1); err == nil {
		t.Fatal("old credentials still log in after revocation")
	}

	// Deleting the VaultSecret revokes its lease: the user disappears.
	if err := s.c.Delete(ctx, &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"}}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for roleExists(user2) {
		if time.Now().After(deadline) {
			t.Fatalf("database user %q still exists after its VaultSecret was deleted", user2)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The lease is revoked first, then the Secret goes.
	s.waitGone(t, "app", "db", 30*time.Second)

	// A policy without revoke: replaced leases cannot be revoked. That is
	// a configuration error, reported as a condition, not retried.
	s.v.Policy("db-norevoke", `
path "database/creds/app"                   { capabilities = ["read"] }
path "sys/leases/renew/database/creds/app/*" { capabilities = ["update"] }
`)
	s.role("db-norevoke", "other", "db-norevoke", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db, namespace: other}
spec:
  auth: {kubernetes: {role: db-norevoke, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10s
  revokeGracePeriod: 0s
  revokeOnDelete: false
`); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(40 * time.Second)
	for {
		var vs v1alpha1.VaultSecret
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: "other", Name: "db"}, &vs); err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(vs.Status.Conditions, "PreviousLeaseRevoked")
		if c != nil && c.Status == metav1.ConditionFalse && c.Reason == "PermissionDenied" {
			if vs.Status.Lease.PreviousID != "" {
				t.Fatalf("a refused revocation is still scheduled for retry: %+v", vs.Status.Lease)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PreviousLeaseRevoked=False/PermissionDenied condition: %+v", vs.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// revokeOnDelete: false: deletion does not wait on Vault.
	if err := s.c.Delete(ctx, &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "db"}}); err != nil {
		t.Fatal(err)
	}
	s.waitGone(t, "other", "db", 30*time.Second)
	for _, leak := range []string{pass1, pass2} {
		if strings.Contains(s.log.String(), leak) {
			t.Fatal("a database password appeared in the controller's log")
		}
	}
}

// createdBy tells whether manager owns fields of sec through an update
// operation (a create, or an update) rather than server-side apply.
func createdBy(sec *corev1.Secret, manager string) bool {
	for _, f := range sec.ManagedFields {
		if f.Manager == manager && f.Operation == metav1.ManagedFieldsOperationUpdate && f.Subresource == "" {
			return true
		}
	}
	return false
}

// managers lists sec's managed-fields entries as manager/operation.
func managers(sec *corev1.Secret) []string {
	var out []string
	for _, f := range sec.ManagedFields {
		out = append(out, f.Manager+"/"+string(f.Operation))
	}
	return out
}
