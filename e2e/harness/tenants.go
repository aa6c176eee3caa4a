package harness

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
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

// ApplyChartRBAC creates the chart's ServiceAccount and RBAC (from
// charts/vaultkms/templates/rbac.yaml, its only template value being the
// release namespace) and returns a kubeconfig for that service account,
// so tests run the controller with exactly the privileges it ships with.
func (cp *ControlPlane) ApplyChartRBAC(namespace string) string {
	cp.env.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile(RepoPath(cp.env, "charts/vaultkms/templates/rbac.yaml"))
	if err != nil {
		cp.env.Fatalf("read chart RBAC: %v", err)
	}
	text := strings.ReplaceAll(string(raw), "{{ .Release.Namespace }}", namespace)
	if strings.Contains(text, "{{") {
		cp.env.Fatalf("chart RBAC uses template values the test cannot fill")
	}
	cp.Namespace(namespace)
	for _, doc := range strings.Split(text, "\n---\n") {
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			cp.env.Fatalf("chart RBAC: %v", err)
		}
		var err error
		switch head.Kind {
		case "ServiceAccount":
			var o corev1.ServiceAccount
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cp.Client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			}
		case "ClusterRole":
			var o rbacv1.ClusterRole
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cp.Client.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
			}
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
			}
		case "Role":
			var o rbacv1.Role
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cp.Client.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			}
		case "RoleBinding":
			var o rbacv1.RoleBinding
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cp.Client.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			}
		default:
			cp.env.Fatalf("chart RBAC: unexpected kind %q", head.Kind)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			cp.env.Fatalf("chart RBAC %s: %v", head.Kind, err)
		}
	}
	secs := int64(3600)
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "vaultkms-controller",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		cp.env.Fatalf("token for vaultkms-controller: %v", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData}
	cfg.AuthInfos["vaultkms-controller"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "vaultkms-controller", Namespace: namespace}
	cfg.CurrentContext = "test"
	path := filepath.Join(cp.env.TempDir(), "controller-kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		cp.env.Fatalf("write kubeconfig: %v", err)
	}
	return path
}
