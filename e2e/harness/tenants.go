package harness

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StartControllerManager runs kube-controller-manager with the garbage
// collector, so owner references are honoured as in a real cluster, and
// any further controllers named (such as "namespace", which finishes
// namespace deletion).
func (cp *ControlPlane) StartControllerManager(more ...string) {
	cp.env.Helper()
	dir := cp.env.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		cp.env.Fatalf("kubeconfig for kube-controller-manager: %v", err)
	}
	port, err := FreePort()
	if err != nil {
		cp.env.Fatalf("free port: %v", err)
	}
	proc, err := startProcess(Binary(cp.env, "kube-controller-manager"), []string{
		"--kubeconfig=" + kubeconfig, "--controllers=" + strings.Join(append([]string{"garbagecollector"}, more...), ","), "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port), "--cert-dir=" + dir,
		"--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig,
	}, filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		cp.env.Fatalf("%v", err)
	}
	cp.env.Cleanup(func() { proc.stop(10 * time.Second) })
}

// Namespace creates a namespace and a service account of the same name in
// it, and returns the namespace.
func (cp *ControlPlane) Namespace(name string, serviceAccounts ...string) {
	cp.env.Helper()
	ctx := context.Background()
	_, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		cp.env.Fatalf("create namespace %s: %v", name, err)
	}
	for _, sa := range serviceAccounts {
		_, err := cp.Client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			cp.env.Fatalf("create service account %s/%s: %v", name, sa, err)
		}
	}
}

// ConfigureKubernetesAuth enables Vault's kubernetes auth method at mount
// and points it at this API server, reviewing tokens with a service
// account bound to system:auth-delegator, as in a real cluster.
func ConfigureKubernetesAuth(v *Vault, cp *ControlPlane, mount string) {
	cp.env.Helper()
	ctx := context.Background()
	cp.Namespace("vault-auth", "token-reviewer")
	_, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-token-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "token-reviewer", Namespace: "vault-auth"}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		cp.env.Fatalf("bind token reviewer: %v", err)
	}
	secs := int64(24 * 3600)
	tr, err := cp.Client.CoreV1().ServiceAccounts("vault-auth").CreateToken(ctx, "token-reviewer",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		cp.env.Fatalf("token for the reviewer: %v", err)
	}
	v.EnableAuth(mount, "kubernetes")
	v.Write("auth/"+mount+"/config", map[string]any{
		"kubernetes_host":    cp.Config.Host,
		"kubernetes_ca_cert": string(cp.Config.CAData),
		"token_reviewer_jwt": tr.Status.Token,
	})
}
