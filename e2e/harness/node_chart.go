package harness

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeChart is the chart installed on a node by InstallChartOnNode.
type NodeChart struct {
	Release *Release
	// Namespace is the release's, which enforces the restricted Pod
	// Security Standard.
	Namespace string
	// Binaries are the static binaries the images were built from, by
	// program name (vaultkms-plugin, vaultkms-controller, ...).
	Binaries map[string]string
	// VaultAddr is Vault's address as pods reach it.
	VaultAddr string
}

// InstallChartOnNode builds the controller image as `make image` builds it
// (offline form: on scratch), loads it into the node, and installs the
// chart with `helm install --wait` into namespace vaultkms-system, labelled
// pod-security.kubernetes.io/enforce=restricted, pointed at Vault through
// the node's bridge (v must be started with VaultOptions.ReachableAt the
// node's HostIP) with its CA in Secret vault-ca. values are further --set
// values. It returns once the controller pods are Ready.
func InstallChartOnNode(env Env, cp *ControlPlane, node *Node, v *Vault, values ...string) *NodeChart {
	env.Helper()
	ctx := context.Background()
	nc := &NodeChart{Namespace: "vaultkms-system", Binaries: map[string]string{}}
	// The classic builder builds the stages before --target too.
	for _, b := range []string{"vaultkms-plugin", "vaultkms-controller", "kubectl-vaultkms", "vaultkms-auditor"} {
		nc.Binaries[b] = StaticBuild(env, "github.com/vaultkms/vaultkms/cmd/"+b)
	}
	tag := "e2e-" + RandomSuffix()
	for _, target := range []string{"controller", "auditor"} {
		ref := "docker.io/vaultkms-e2e/vaultkms-" + target + ":" + tag
		BuildImage(env, target, ref, tag, nc.Binaries)
		node.LoadImage(ref)
	}

	u, err := url.Parse(v.Addr)
	if err != nil {
		env.Fatalf("vault address %q: %v", v.Addr, err)
	}
	nc.VaultAddr = fmt.Sprintf("https://%s:%s", node.HostIP, u.Port())
	ca, err := os.ReadFile(v.CA.CertFile)
	if err != nil {
		env.Fatalf("%v", err)
	}
	RestrictedNamespace(env, cp, nc.Namespace)
	if _, err := cp.Client.CoreV1().Secrets(nc.Namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-ca"}, Data: map[string][]byte{"ca.crt": ca},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		env.Fatalf("Secret vault-ca: %v", err)
	}
	installed := time.Now()
	nc.Release = cp.InstallChartAndWait("vaultkms", nc.Namespace, 3*time.Minute, append([]string{
		"vault.addr=" + nc.VaultAddr, "vault.caCertSecret=vault-ca",
		"controller.image.repository=docker.io/vaultkms-e2e/vaultkms-controller", "controller.image.tag=" + tag, "controller.image.pullPolicy=Never",
		"auditor.image.repository=docker.io/vaultkms-e2e/vaultkms-auditor", "auditor.image.tag=" + tag, "auditor.image.pullPolicy=Never",
	}, values...)...)
	env.Logf("helm install --wait returned after %s", time.Since(installed).Round(100*time.Millisecond))
	return nc
}

// RestrictedNamespace creates a namespace whose pods must meet the
// restricted Pod Security Standard.
func RestrictedNamespace(env Env, cp *ControlPlane, name string) {
	env.Helper()
	_, err := cp.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"},
	}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		env.Fatalf("namespace %s: %v", name, err)
	}
}
