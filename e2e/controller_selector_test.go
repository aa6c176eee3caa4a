package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

const serveLabel = "vaultkms.io/serve"

// labelNamespace sets (value != "") or removes (value == "") the serve
// label of a namespace.
func (s *syncerStack) labelNamespace(t *testing.T, ns, value string) {
	t.Helper()
	var v any
	if value != "" {
		v = value
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{serveLabel: v}}})
	if err := s.c.Patch(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

// skips counts the controller's log lines saying it left vaultsecret
// (namespace/name) alone because its namespace is not selected.
func (s *syncerStack) skips(vaultsecret string) int {
	n := 0
	for _, line := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(line, "namespace not selected; not served") && strings.Contains(line, `"`+vaultsecret+`"`) {
			n++
		}
	}
	return n
}

func (s *syncerStack) waitSkips(t *testing.T, vaultsecret string, more int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for s.skips(vaultsecret) < more {
		if time.Now().After(deadline) {
			t.Fatalf("the controller did not look at %s within %s (want %d skips, saw %d)\ncontroller log:\n%s", vaultsecret, timeout, more, s.skips(vaultsecret), s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *syncerStack) vaultSecret(t *testing.T, ns, name string) *v1alpha1.VaultSecret {
	t.Helper()
	var vs v1alpha1.VaultSecret
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &vs); err != nil {
		t.Fatalf("get VaultSecret %s/%s: %v", ns, name, err)
	}
	return &vs
}

// TestVaultSecretNamespaceSelector runs the controller with
// --namespace-selector and the chart's RBAC for it (list/watch on
// namespaces, no get): a selected namespace is served, an unselected one is
// left alone (no Secret, no status, no finalizer), labelling brings it in,
// and unlabelling stops serving it: no more Vault reads or writes, and the
// Secret already issued is deleted at its expires-at.
func TestVaultSecretNamespaceSelector(t *testing.T) {
	t.Parallel()
	sel := serveLabel + "=true"
	s := startSyncerStack(t, stackOptions{
		args:        []string{"--namespace-selector=" + sel},
		chartValues: []string{"controller.namespaceSelector=" + sel},
	})
	s.cp.Namespace("later", "app")
	s.v.Policy("kv-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "kv-read", nil)
	s.role("later", "later", "kv-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "v1-selected"}})
	manifest := func(ns, role string) string {
		return fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: cfg, namespace: %s}
spec:
  auth: {kubernetes: {role: %s, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 10s
  target: {name: cfg}
`, ns, role)
	}
	s.labelNamespace(t, "app", "true")
	// The unselected one first, so by the time the selected one is Ready
	// the controller has had every chance to touch it.
	if _, err := s.apply(t, manifest("later", "later")); err != nil {
		t.Fatalf("create VaultSecret: %v", err)
	}
	if _, err := s.apply(t, manifest("app", "app")); err != nil {
		t.Fatalf("create VaultSecret: %v", err)
	}

	t.Run("a selected namespace is served", func(t *testing.T) {
		sec := s.waitSecret(t, "app", "cfg", 30*time.Second, func(*corev1.Secret) bool { return true })
		if string(sec.Data["password"]) != "v1-selected" {
			t.Fatalf("Secret keys %v, not the Vault value", keys(sec.Data))
		}
		s.waitReady(t, "app", "cfg", metav1.ConditionTrue, "Synced", 10*time.Second)
	})

	t.Run("an unselected namespace is left alone", func(t *testing.T) {
		// The controller saw it (the log says so) and chose not to act.
		s.waitSkips(t, "later/cfg", 1, 10*time.Second)
		if _, err := s.secret("later", "cfg"); !apierrors.IsNotFound(err) {
			t.Fatalf("a Secret was written in an unselected namespace (err %v)", err)
		}
		vs := s.vaultSecret(t, "later", "cfg")
		if len(vs.Status.Conditions) != 0 || vs.Status.ObservedGeneration != 0 || vs.Status.LastSyncTime != nil || len(vs.Finalizers) != 0 {
			t.Fatalf("the controller wrote to a VaultSecret it does not serve: status %+v finalizers %v", vs.Status, vs.Finalizers)
		}
	})

	var servedAt *v1alpha1.VaultSecret
	t.Run("labelling the namespace brings it in", func(t *testing.T) {
		s.labelNamespace(t, "later", "true")
		sec := s.waitSecret(t, "later", "cfg", 30*time.Second, func(*corev1.Secret) bool { return true })
		if string(sec.Data["password"]) != "v1-selected" {
			t.Fatalf("Secret keys %v, not the Vault value", keys(sec.Data))
		}
		servedAt = s.waitReady(t, "later", "cfg", metav1.ConditionTrue, "Synced", 10*time.Second)
	})
	if servedAt == nil {
		t.FailNow()
	}

	t.Run("unlabelling stops serving; the issued Secret expires on time", func(t *testing.T) {
		before := s.skips("later/cfg")
		s.labelNamespace(t, "later", "")
		// The namespace change reaches the controller, which drops it.
		s.waitSkips(t, "later/cfg", before+1, 10*time.Second)
		// A refresh already under way when the label went may still land;
		// let it, then take the state the controller leaves behind.
		time.Sleep(time.Second)
		vs := s.vaultSecret(t, "later", "cfg")
		sec, err := s.secret("later", "cfg")
		if err != nil {
			t.Fatalf("the Secret went before its expiry: %v", err)
		}
		exp, err := time.Parse(time.RFC3339, sec.Annotations["secrets.vaultkms.io/expires-at"])
		if err != nil {
			t.Fatalf("expires-at: %v", err)
		}
		// A new value in Vault: the selected namespace follows it, the
		// unselected one must not.
		s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "v2-after-unlabel"}})
		deadline := exp.Add(5 * time.Second)
		for {
			cur, err := s.secret("later", "cfg")
			if apierrors.IsNotFound(err) {
				break
			}
			if err == nil && string(cur.Data["password"]) != "v1-selected" {
				t.Fatalf("the Secret in the unlabelled namespace was refreshed from Vault")
			}
			if time.Now().After(deadline) {
				t.Fatalf("the Secret still exists 5s after its expires-at %s\ncontroller log:\n%s", exp, s.log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if late := time.Since(exp); late < -time.Second {
			t.Fatalf("the Secret was deleted %s before its expires-at", -late)
		}
		// The served namespace is still served (the controller is alive
		// and reading Vault), and the unserved one is not re-created.
		s.waitSecret(t, "app", "cfg", 20*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "v2-after-unlabel" })
		if _, err := s.secret("later", "cfg"); !apierrors.IsNotFound(err) {
			t.Fatalf("the Secret in the unlabelled namespace came back (err %v)", err)
		}
		after := s.vaultSecret(t, "later", "cfg")
		if after.ResourceVersion != vs.ResourceVersion {
			t.Fatalf("the controller wrote to the VaultSecret after its namespace was unlabelled: status %+v -> %+v", vs.Status, after.Status)
		}
	})

	t.Run("labelling it again serves it again", func(t *testing.T) {
		s.labelNamespace(t, "later", "true")
		s.waitSecret(t, "later", "cfg", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["password"]) == "v2-after-unlabel" })
		s.waitReady(t, "later", "cfg", metav1.ConditionTrue, "Synced", 10*time.Second)
	})
}

// TestChartNamespaceSelector: the selector is a chart value, passed as the
// flag, and only with it does the controller get namespaces, list and
// watch only (its cache never GETs a namespace).
func TestChartNamespaceSelector(t *testing.T) {
	t.Parallel()
	nsRules := func(manifest string) [][]any {
		var out [][]any
		for _, o := range renderedObjects(t, manifest) {
			if o["kind"] != "ClusterRole" || !strings.HasSuffix(objName(o), "-controller") {
				continue
			}
			rules, _ := o["rules"].([]any)
			for _, r := range rules {
				m, _ := r.(map[string]any)
				res, _ := m["resources"].([]any)
				for _, x := range res {
					if x == "namespaces" {
						verbs, _ := m["verbs"].([]any)
						out = append(out, verbs)
					}
				}
			}
		}
		return out
	}
	off, err := helmTemplate(t, "r", "ns", chartVaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	// list and watch (never get, never a write): ClusterVaultConnection's
	// allowedNamespaces selects namespaces by label, with or without a
	// namespace selector.
	if r := nsRules(off); len(r) != 1 || fmt.Sprint(r[0]) != "[list watch]" {
		t.Errorf("without a selector the controller gets namespaces %v; want only [list watch]", r)
	}
	if strings.Contains(off, "--namespace-selector") {
		t.Errorf("the flag is rendered without a selector")
	}
	on, err := helmTemplate(t, "r", "ns", chartVaultAddr, "controller.namespaceSelector=team in (a\\, b)")
	if err != nil {
		t.Fatal(err)
	}
	if r := nsRules(on); len(r) != 1 || fmt.Sprint(r[0]) != "[list watch]" {
		t.Errorf("with a selector the controller gets namespaces %v; want exactly [list watch]", r)
	}
	if !strings.Contains(on, `"--namespace-selector=team in (a, b)"`) {
		t.Errorf("the selector is not passed as --namespace-selector:\n%s", on)
	}
	out, err := helmTemplate(t, "r", "ns", chartVaultAddr, "controller.namespaceSelector=a\nb")
	if err == nil || !strings.Contains(out, "/controller/namespaceSelector") {
		t.Errorf("a selector with a newline rendered (err %v): %s", err, out)
	}
}
