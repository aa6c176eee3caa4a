package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// blackHole is a TCP proxy in front of Vault that, once holed, accepts
// connections and never answers: the worst way for Vault to fail, since
// nothing errors until a deadline does.
type blackHole struct {
	ln     net.Listener
	target string
	holed  atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func startBlackHole(t *testing.T, target string) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			if b.holed.Load() {
				continue // held open, never read, never answered
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, up)
			b.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return b
}

func (b *blackHole) addr() string { return "https://" + b.ln.Addr().String() }

// hole stops answering: connections already open are cut, new ones hang.
func (b *blackHole) hole() {
	b.holed.Store(true)
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
}

// restore forwards again. The connections held while holed are cut, so
// clients waiting on them connect anew instead of waiting for a deadline.
func (b *blackHole) restore() {
	b.holed.Store(false)
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
}

// applyRaw sends a manifest to the API server as it is, without decoding it
// into Go types first, so values the Go types would refuse reach admission.
func (s *syncerStack) applyRaw(t *testing.T, manifest string) error {
	t.Helper()
	var obj unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	return s.c.Create(context.Background(), &obj)
}

// TestVaultSecretOneTenantCannotStopOthers: malformed or hostile specs are
// refused at admission or reported as InvalidSpec while other tenants keep
// syncing; Secrets the controller does not own are never deleted; and a
// Vault that accepts connections but never answers does not delay any
// deletion at expiry.
func TestVaultSecretOneTenantCannotStopOthers(t *testing.T) {
	t.Parallel()
	var bh *blackHole
	s := startSyncerStack(t, stackOptions{vaultAddr: func(v *harness.Vault) string {
		bh = startBlackHole(t, strings.TrimPrefix(v.Addr, "https://"))
		return bh.addr()
	}})
	ctx := context.Background()
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "pw-7d1e", "user": "svc"}})

	t.Run("fields that decode themselves are checked at admission", func(t *testing.T) {
		base := `{apiVersion: secrets.vaultkms.io/v1alpha1, kind: VaultSecret, metadata: {name: %s, namespace: app},
  spec: {auth: {kubernetes: {role: app, serviceAccountName: app}}, source: {kv: {mount: secret, path: app/config}}, %s}}`
		cases := []struct{ name, spec, want string }{
			// Before: accepted, then the informer's LIST failed to decode
			// it and the controller crash-looped for every tenant.
			{"bad-grace", `revokeGracePeriod: forever`, "revokeGracePeriod"},
			{"bad-ttl", `ttl: soon`, "ttl"},
			{"ttl-floor", `ttl: 5s`, "ttl must be between 10s"},
			{"big-template", `target: {template: {k: "` + strings.Repeat("x", 5000) + `"}}`, "at most 4096"},
			{"bad-type", `target: {type: kubernetes.io/service-account-token}`, "spec.target.type"},
		}
		for _, tc := range cases {
			err := s.applyRaw(t, fmt.Sprintf(base, tc.name, tc.spec))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want a rejection containing %q", tc.name, err, tc.want)
			}
		}
		err := s.applyRaw(t, `{apiVersion: secrets.vaultkms.io/v1alpha1, kind: VaultSecret, metadata: {name: bad-mount, namespace: app},
  spec: {auth: {kubernetes: {role: app, serviceAccountName: app}}, source: {kv: {mount: "../sys", path: a}}}}`)
		if err == nil || !strings.Contains(err.Error(), "spec.source.kv.mount") {
			t.Errorf("mount with '..': %v", err)
		}
	})

	t.Run("template bombs are InvalidSpec and others still sync", func(t *testing.T) {
		for name, tmpl := range map[string]string{
			"bomb-output": `{{range 200000000}}{{.password}}{{end}}`,
			"bomb-loop":   `{{range 3000000000}}{{end}}`,
		} {
			if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: `+name+`, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  target: {template: {out: '`+tmpl+`'}}
`); err != nil {
				t.Fatal(err)
			}
		}
		vs := s.waitReady(t, "app", "bomb-output", metav1.ConditionFalse, "InvalidSpec", 30*time.Second)
		if msg := meta.FindStatusCondition(vs.Status.Conditions, "Ready").Message; !strings.Contains(msg, `spec.target.template["out"]`) || strings.Contains(msg, "pw-7d1e") {
			t.Fatalf("condition does not name the field, or leaks the value: %q", msg)
		}
		s.waitReady(t, "app", "bomb-loop", metav1.ConditionFalse, "InvalidSpec", 30*time.Second)
		// Another tenant created after the bombs is served.
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: after-bombs, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 10s
`); err != nil {
			t.Fatal(err)
		}
		s.waitReady(t, "app", "after-bombs", metav1.ConditionTrue, "Synced", 30*time.Second)
	})

	t.Run("the controller's own service account cannot be named", func(t *testing.T) {
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: borrow-controller, namespace: vaultkms-system}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: vaultkms-controller}}
  source: {kv: {mount: secret, path: app/config}}
`); err != nil {
			t.Fatal(err)
		}
		s.waitReady(t, "vaultkms-system", "borrow-controller", metav1.ConditionFalse, "InvalidSpec", 30*time.Second)
	})

	t.Run("deleting a VaultSecret never deletes a Secret it does not own", func(t *testing.T) {
		mine := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "not-yours"}, Data: map[string][]byte{"mine": []byte("keep")}}
		if err := s.c.Create(ctx, mine); err != nil {
			t.Fatal(err)
		}
		// A dynamic source carries a finalizer; its target is taken.
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: wants-not-yours, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/none}}
  target: {name: not-yours}
`); err != nil {
			t.Fatal(err)
		}
		s.waitReady(t, "app", "wants-not-yours", metav1.ConditionFalse, "SecretConflict", 30*time.Second)
		if err := s.c.Delete(ctx, &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "wants-not-yours"}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "wants-not-yours"}, &v1alpha1.VaultSecret{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("VaultSecret not deleted: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		got, err := s.secret("app", "not-yours")
		if err != nil || string(got.Data["mine"]) != "keep" {
			t.Fatalf("the unowned Secret was deleted or changed: %v", err)
		}
	})

	t.Run("the Expires column shows a time, not <invalid>", func(t *testing.T) {
		kube := kubernetes.NewForConfigOrDie(s.cp.Config)
		raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/apis/secrets.vaultkms.io/v1alpha1/namespaces/app/vaultsecrets/after-bombs").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var table metav1.Table
		if err := json.Unmarshal(raw, &table); err != nil {
			t.Fatal(err)
		}
		col := -1
		for i, c := range table.ColumnDefinitions {
			if c.Name == "Expires" {
				col = i
				if c.Type != "string" {
					t.Fatalf("Expires column of type %q: kubectl prints a future date as <invalid>", c.Type)
				}
			}
		}
		if col < 0 || len(table.Rows) != 1 {
			t.Fatalf("no Expires column or no row: %s", raw)
		}
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(table.Rows[0].Cells[col])); err != nil {
			t.Fatalf("Expires cell %v: %v", table.Rows[0].Cells[col], err)
		}
	})

	t.Run("a black-holed Vault delays no deletion at expiry", func(t *testing.T) {
		const n = 20
		for i := range n {
			if _, err := s.apply(t, fmt.Sprintf(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: bh-%d, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 12s
`, i)); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			s.waitSecret(t, "app", fmt.Sprintf("bh-%d", i), 60*time.Second, func(*corev1.Secret) bool { return true })
		}
		bh.hole()
		holedAt := time.Now()
		// In-flight requests were cut, so no refresh succeeds from here.
		expires := map[string]time.Time{}
		for i := range n {
			name := fmt.Sprintf("bh-%d", i)
			sec, err := s.secret("app", name)
			if err != nil {
				t.Fatalf("%s gone before its expiry: %v", name, err)
			}
			at, err := time.Parse(time.RFC3339, sec.Annotations["secrets.vaultkms.io/expires-at"])
			if err != nil {
				t.Fatal(err)
			}
			expires[name] = at
		}
		var worst time.Duration
		for len(expires) > 0 {
			for name, at := range expires {
				if _, err := s.secret("app", name); apierrors.IsNotFound(err) {
					late := time.Since(at)
					worst = max(worst, late)
					if late > 5*time.Second {
						t.Errorf("Secret %s deleted %s after its expires-at", name, late.Round(100*time.Millisecond))
					}
					delete(expires, name)
				} else if time.Since(at) > 60*time.Second {
					t.Fatalf("Secret %s still exists 60s after its expires-at", name)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("all %d Secrets deleted; latest %s after its expires-at (Vault black-holed %s before)", n, worst.Round(100*time.Millisecond), time.Since(holedAt).Round(time.Second))
		// Every Vault call has a deadline: the failure is reported, not
		// stuck behind a request that never returns.
		s.waitReady(t, "app", "bh-0", metav1.ConditionFalse, "Expired", 60*time.Second)
	})
}
