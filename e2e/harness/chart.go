package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// Helm runs bin/helm with its own config, cache and data directories (so
// tests share no Helm state) against kubeconfig, which may be empty for
// commands that need no cluster. It returns the combined output.
func Helm(env Env, kubeconfig string, args ...string) (string, error) {
	env.Helper()
	home := env.TempDir()
	cmd := exec.Command(Binary(env, "helm"), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfig,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// ChartPath is the repository's chart.
func ChartPath(env Env) string { return RepoPath(env, "charts/vaultkms") }

// Release is a release of the chart installed with `helm install` into a
// ControlPlane, and what Helm rendered for it.
type Release struct {
	Name, Namespace string
	// Objects is the rendered manifest, one document per object.
	Objects []map[string]any
	cp      *ControlPlane
}

// InstallChart installs the chart as release name into namespace (which
// must exist) with `helm upgrade --install`, setting values (key=value, as
// for --set). It fails the test with Helm's message on error.
func (cp *ControlPlane) InstallChart(name, namespace string, values ...string) *Release {
	cp.env.Helper()
	return cp.installChart(name, namespace, nil, values)
}

// InstallChartAndWait is InstallChart with `--wait`: on a control plane
// with a node (StartNode), Helm returns once the release's pods are Ready
// through their own probes, and fails after timeout.
func (cp *ControlPlane) InstallChartAndWait(name, namespace string, timeout time.Duration, values ...string) *Release {
	cp.env.Helper()
	return cp.installChart(name, namespace, []string{"--wait", "--timeout", timeout.String()}, values)
}

func (cp *ControlPlane) installChart(name, namespace string, flags, values []string) *Release {
	cp.env.Helper()
	kubeconfig := filepath.Join(cp.env.TempDir(), "helm-kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		cp.env.Fatalf("kubeconfig for helm: %v", err)
	}
	args := []string{"upgrade", "--install", name, ChartPath(cp.env), "--namespace", namespace, "--timeout", "2m"}
	args = append(args, flags...)
	for _, v := range values {
		args = append(args, "--set", v)
	}
	if _, err := Helm(cp.env, kubeconfig, args...); err != nil {
		cp.env.Fatalf("%v", err)
	}
	manifest, err := Helm(cp.env, kubeconfig, "get", "manifest", name, "--namespace", namespace)
	if err != nil {
		cp.env.Fatalf("%v", err)
	}
	r := &Release{Name: name, Namespace: namespace, cp: cp}
	for _, doc := range strings.Split(manifest, "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			cp.env.Fatalf("rendered manifest of %s: %v", name, err)
		}
		if o != nil {
			r.Objects = append(r.Objects, o)
		}
	}
	return r
}

// Uninstall runs `helm uninstall`.
func (r *Release) Uninstall() {
	r.cp.env.Helper()
	kubeconfig := filepath.Join(r.cp.env.TempDir(), "helm-kubeconfig")
	if err := r.cp.WriteKubeconfig(kubeconfig); err != nil {
		r.cp.env.Fatalf("kubeconfig for helm: %v", err)
	}
	if _, err := Helm(r.cp.env, kubeconfig, "uninstall", r.Name, "--namespace", r.Namespace); err != nil {
		r.cp.env.Fatalf("%v", err)
	}
}

// Find returns the rendered object of kind whose name ends with suffix.
func (r *Release) Find(kind, suffix string) map[string]any {
	r.cp.env.Helper()
	for _, o := range r.Objects {
		md, _ := o["metadata"].(map[string]any)
		if o["kind"] == kind && strings.HasSuffix(fmt.Sprint(md["name"]), suffix) {
			return o
		}
	}
	r.cp.env.Fatalf("release %s rendered no %s named *%s", r.Name, kind, suffix)
	return nil
}

// Deployment returns the rendered Deployment whose name ends with suffix.
func (r *Release) Deployment(suffix string) *appsv1.Deployment {
	r.cp.env.Helper()
	b, err := yaml.Marshal(r.Find("Deployment", suffix))
	if err != nil {
		r.cp.env.Fatalf("%v", err)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		r.cp.env.Fatalf("rendered Deployment: %v", err)
	}
	return &d
}

// ServiceAccountKubeconfig returns a kubeconfig holding a token of the
// service account, from TokenRequest: the identity a pod of it would have.
func (cp *ControlPlane) ServiceAccountKubeconfig(namespace, serviceAccount string) string {
	cp.env.Helper()
	secs := int64(3600)
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), serviceAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		cp.env.Fatalf("token for %s/%s: %v", namespace, serviceAccount, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData}
	cfg.AuthInfos[serviceAccount] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: serviceAccount, Namespace: namespace}
	cfg.CurrentContext = "test"
	path := filepath.Join(cp.env.TempDir(), serviceAccount+"-kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		cp.env.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

// ApplyChartRBAC installs the chart (release "vaultkms") into namespace
// with `helm upgrade --install` and returns a kubeconfig of the
// controller's ServiceAccount as rendered, so tests run the controller
// with exactly the privileges it ships with. The Deployment is created
// too, but nothing runs its pods (there is no kubelet). values are further
// --set values, for RBAC that depends on them.
func (cp *ControlPlane) ApplyChartRBAC(namespace string, values ...string) string {
	cp.env.Helper()
	cp.Namespace(namespace)
	r := cp.InstallChart("vaultkms", namespace, append([]string{"vault.addr=https://vault.invalid:8200"}, values...)...)
	d := r.Deployment("-controller")
	return cp.ServiceAccountKubeconfig(namespace, d.Spec.Template.Spec.ServiceAccountName)
}
