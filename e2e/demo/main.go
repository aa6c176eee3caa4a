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
	cp := harness.StartControlPlane(env, harness.ControlPlaneOptions{EncryptionConfig: harness.KMSEncryptionConfig("vault", p.Socket)})

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

	dir := env.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		env.Fatalf("kubeconfig: %v", err)
	}
	bin, _ := harness.BinDir()
	fmt.Printf("Everything is running. In another terminal:\n\n")
	fmt.Printf("  export KUBECONFIG=%s\n", kubeconfig)
	fmt.Printf("  kubectl get secret demo -o yaml            # if kubectl is installed\n")
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
