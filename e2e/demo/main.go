// Command demo runs vaultkms locally with embedded defaults: a real Vault,
// etcd and kube-apiserver, and the KMS v2 plugin between them. It shows a
// Secret as etcd stores it next to what the API server returns, then keeps
// everything running until Ctrl-C. `make demo` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

func main() {
	env := &harness.Main{}
	defer env.Close()
	step := func(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

	step("starting Vault (file storage, TLS, initialised and unsealed)")
	v := harness.StartVault(env)
	v.TransitKey("transit", "kubernetes")
	v.Policy("kms-plugin", harness.PluginPolicy("transit", "kubernetes"))
	pluginToken := v.Write("auth/token/create", map[string]any{"policies": []string{"kms-plugin"}, "ttl": "24h"}).Auth.ClientToken

	step("starting the vaultkms KMS v2 plugin (transit/kubernetes, least-privilege token from a file)")
	p := harness.StartPlugin(env, v, harness.PluginOptions{Key: "kubernetes", RefreshInterval: 5 * time.Second,
		Method: vault.TokenFile{Path: harness.TokenFile(env, pluginToken)}})
	keyID := p.WaitKeyID(env, 30*time.Second)

	step("starting etcd and kube-apiserver with an EncryptionConfiguration for the plugin")
	cp := harness.StartControlPlane(env, harness.ControlPlaneOptions{EncryptionConfig: harness.KMSEncryptionConfig("vault", p.Socket),
		CRDDirs: []string{harness.RepoPath(env, "charts/vaultkms/crds")}})

	step("creating Secret default/demo")
	ctx := context.Background()
	_, err := cp.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "demo"},
		StringData: map[string]string{"password": "correct-horse-battery-staple"},
	}, metav1.CreateOptions{})
	if err != nil {
		env.Fatalf("create secret: %v", err)
	}
	raw := cp.RawGet("/registry/secrets/default/demo")
	sv, err := storedvalue.Classify(raw)
	if err != nil {
		env.Fatalf("classify: %v", err)
	}
	got, err := cp.Client.CoreV1().Secrets("default").Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		env.Fatalf("get secret: %v", err)
	}
	prefixLen := len("k8s:enc:kms:v2:") + len(sv.Provider) + 1
	fmt.Println()
	fmt.Printf("  in etcd, /registry/secrets/default/demo (%d bytes):\n", len(raw))
	fmt.Printf("    prefix   %s\n", strconv.Quote(string(raw[:min(prefixLen, len(raw))])))
	fmt.Printf("    key_id   %s\n", sv.KeyID)
	fmt.Printf("    plugin   %s (current key_id)\n", keyID)
	fmt.Printf("  through the API server:\n")
	fmt.Printf("    password %s\n", got.Data["password"])
	fmt.Println()

	demoVaultSecret(env, v, cp, p.Socket)

	dir := env.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		env.Fatalf("kubeconfig: %v", err)
	}
	bin, _ := harness.BinDir()
	fmt.Printf("Everything is running. In another terminal:\n\n")
	fmt.Printf("  export KUBECONFIG=%s\n", kubeconfig)
	fmt.Printf("  kubectl get secret demo -o yaml            # if kubectl is installed\n")
	fmt.Printf("  kubectl -n app get vaultsecret,secret      # the VaultSecret and its short-lived Secret\n")
	fmt.Printf("  kubectl get encryptionstatus cluster -o yaml\n")
	fmt.Printf("  go run ./cmd/kubectl-vaultkms status --kubeconfig=%s --etcd-endpoints=%s --kms-socket=%s\n", kubeconfig, cp.EtcdURL, p.Socket)
	fmt.Printf("  %s --endpoints=%s get /registry/secrets/default/demo | head -c 120; echo\n", filepath.Join(bin, "etcdctl"), cp.EtcdURL)
	rootTokenFile := harness.TokenFile(env, v.RootToken)
	fmt.Printf("  VAULT_ADDR=%s VAULT_CACERT=%s VAULT_TOKEN=$(cat %s) \\\n    %s write -f transit/keys/kubernetes/rotate   # rotate; new writes switch key_id within ~70s\n",
		v.Addr, v.CA.CertFile, rootTokenFile, filepath.Join(bin, "vault"))
	fmt.Printf("\nPress Ctrl-C to stop everything.\n")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	fmt.Println("\nstopping...")
}

// demoVaultSecret runs the controller with the chart's RBAC and shows a
// VaultSecret becoming a Secret, then following a change in Vault.
func demoVaultSecret(env *harness.Main, v *harness.Vault, cp *harness.ControlPlane, kmsSocket string) {
	ctx := context.Background()
	fmt.Println("==> configuring Vault kubernetes auth against this API server; namespace app with service account app")
	cp.StartControllerManager()
	harness.ConfigureKubernetesAuth(v, cp, "kubernetes")
	cp.Namespace("app", "app")
	v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	v.Write("auth/kubernetes/role/app", map[string]any{"bound_service_account_names": "app", "bound_service_account_namespaces": "app", "token_policies": "app-read", "token_ttl": "1h", "audience": "vault"})
	v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "initial-password"}})

	fmt.Println("==> starting vaultkms-controller with the chart's RBAC")
	kubeconfig := cp.ApplyChartRBAC("vaultkms-system")
	harness.StartController(env, kubeconfig, "--vault-addr="+v.Addr, "--vault-ca-cert="+v.CA.CertFile, "--namespace=vaultkms-system")
	fmt.Println("==> starting vaultkms-auditor (scans etcd, publishes EncryptionStatus)")
	startAuditor(env, cp, "--etcd-endpoints="+cp.EtcdURL, "--kms-socket="+kmsSocket, "--scan-interval=30s", "--metrics-bind-address=0", "--health-probe-bind-address=0")

	scheme := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(scheme)
	_ = corev1.AddToScheme(scheme)
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		env.Fatalf("client: %v", err)
	}
	ttl := metav1.Duration{Duration: 30 * time.Second}
	vs := &v1alpha1.VaultSecret{
		ObjectMeta: metav1.ObjectMeta{Name: "app-config", Namespace: "app"},
		Spec: v1alpha1.VaultSecretSpec{
			Auth:   v1alpha1.Auth{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app"}},
			Source: v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}},
			TTL:    &ttl,
		},
	}
	fmt.Println("==> creating VaultSecret app/app-config (kv secret/app/config, ttl 30s)")
	if err := c.Create(ctx, vs); err != nil {
		env.Fatalf("create VaultSecret: %v", err)
	}
	wait := func(want string) *corev1.Secret {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			var s corev1.Secret
			if err := c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "app-config"}, &s); err == nil && string(s.Data["password"]) == want {
				return &s
			}
			time.Sleep(250 * time.Millisecond)
		}
		env.Fatalf("Secret app/app-config did not get the expected value within 60s")
		return nil
	}
	s := wait("initial-password")
	fmt.Printf("  Secret app/app-config: password=%s, expires-at %s\n", s.Data["password"], s.Annotations["secrets.vaultkms.io/expires-at"])
	fmt.Println("==> changing the password in Vault; the controller re-reads at 2/3 of the ttl")
	v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "rotated-password"}})
	start := time.Now()
	s = wait("rotated-password")
	fmt.Printf("  Secret app/app-config: password=%s after %s, expires-at %s\n\n", s.Data["password"], time.Since(start).Round(time.Second), s.Annotations["secrets.vaultkms.io/expires-at"])
}

// startAuditor runs cmd/vaultkms-auditor with an admin kubeconfig until the
// demo ends.
func startAuditor(env *harness.Main, cp *harness.ControlPlane, args ...string) {
	kubeconfig := filepath.Join(env.TempDir(), "auditor.kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		env.Fatalf("kubeconfig: %v", err)
	}
	harness.RunAuditor(env, kubeconfig, args...)
}
