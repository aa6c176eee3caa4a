package e2e

import (
	"context"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// TestChartOnNode installs the chart with `helm install --wait` on a real
// kubelet (harness.StartNode: a private containerd, a CNI bridge,
// kube-scheduler and kube-controller-manager with all controllers), into
// a namespace that enforces the restricted Pod Security Standard. The
// controller's pods must be admitted, become Ready through their own
// probes and, with only their in-cluster configuration (the mounted
// service account token, the kube-root-ca.crt CA, the kubernetes
// Service), sync a VaultSecret from a Vault the pods reach over the
// node's bridge.
func TestChartOnNode(t *testing.T) {
	if why := harness.NodeUnsupported(); why != "" {
		t.Skipf("TestChartOnNode runs the chart's pods on a real kubelet: %s", why)
	}
	if _, err := harness.Docker("info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("TestChartOnNode builds the images with docker: %v", err)
	}
	ctx := context.Background()
	start := time.Now()
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{Node: true})
	node := harness.StartNode(t, cp)
	t.Logf("control plane and node Ready after %s", time.Since(start).Round(100*time.Millisecond))

	v := harness.StartVaultWith(t, harness.VaultOptions{ReachableAt: []net.IP{node.HostIP}})
	harness.ConfigureKubernetesAuth(v, cp, "kubernetes")
	auditorValues := prepareNodeAuditor(t, cp, node, v)
	chart := harness.InstallChartOnNode(t, cp, node, v, append([]string{"controller.replicas=2", "controller.podDisruptionBudget.enabled=true"}, auditorValues...)...)
	ns := chart.Namespace

	t.Run("controller pods Ready through their probes", func(t *testing.T) {
		pods, err := cp.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != 2 {
			t.Fatalf("%d controller pods, want 2", len(pods.Items))
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName != node.Name || p.Status.PodIP == "" {
				t.Errorf("pod %s on node %q with IP %q, want on %s with a pod IP", p.Name, p.Spec.NodeName, p.Status.PodIP, node.Name)
			}
			c := p.Spec.Containers[0]
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("pod %s has no probes: the chart's readiness was not tested", p.Name)
			}
			if !podReady(&p) {
				t.Errorf("pod %s not Ready after helm --wait", p.Name)
			}
			for _, s := range p.Status.ContainerStatuses {
				if s.RestartCount != 0 {
					t.Errorf("pod %s container %s restarted %d times", p.Name, s.Name, s.RestartCount)
				}
			}
		}
	})

	// A tenant: its VaultSecret is served by the pods, which log in to
	// the API server and to Vault with their in-cluster configuration.
	const app = "app"
	harness.RestrictedNamespace(t, cp, app)
	cp.Namespace(app, app)
	v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	v.Write("auth/kubernetes/role/app", map[string]any{
		"bound_service_account_names": app, "bound_service_account_namespaces": app,
		"token_policies": "app-read", "token_ttl": "1h", "audience": "vault",
	})
	v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "node-pw-1"}})
	vs := dynamic.NewForConfigOrDie(cp.Config).Resource(schema.GroupVersionResource{Group: "secrets.vaultkms.io", Version: "v1alpha1", Resource: "vaultsecrets"}).Namespace(app)
	var obj unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: config, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  refreshInterval: 5s
  ttl: 1h
  rolloutRestartTargets: [{kind: Deployment, name: reader}]
`), &obj.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := vs.Create(ctx, &obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	synced := time.Now()
	waitSecretValue(t, cp, app, "config", "password", "node-pw-1", 90*time.Second)
	t.Logf("the controller pods synced the VaultSecret in %s", time.Since(synced).Round(100*time.Millisecond))

	t.Run("an application sees a changed value", func(t *testing.T) {
		appImage := harness.ProgramImage(t, "github.com/vaultkms/vaultkms/e2e/harness/nodeapp", "nodeapp")
		node.LoadImage(appImage)
		testAppRollout(t, cp, v, app, appImage)
	})

	// A certificate, issued once: Vault's audit log counts the issues,
	// and a new leader must trust the status the old one wrote rather
	// than issue again.
	audit := v.EnableFileAudit()
	v.Enable("pki", "pki")
	v.Write("pki/root/generate/internal", map[string]any{"common_name": "vaultkms node test root", "ttl": "87600h"})
	v.Write("pki/roles/web", map[string]any{"allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "2h"})
	v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["update"] }`)
	var certVS unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: web-tls, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {pki: {mount: pki, role: web, commonName: web.app.svc}}
  ttl: 1h
`), &certVS.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := vs.Create(ctx, &certVS, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		s, err := cp.Client.CoreV1().Secrets(app).Get(ctx, "web-tls", metav1.GetOptions{})
		if err != nil || len(s.Data["tls.crt"]) == 0 {
			return fmt.Errorf("no certificate in Secret web-tls yet (%v)", err)
		}
		return nil
	})

	t.Run("leader pod deleted, then a drain past the PodDisruptionBudget", func(t *testing.T) {
		issued := func() int { return harness.AuditCount(t, audit, "pki/issue/web") }
		kvReads := func() int { return auditReads(t, audit, "secret/data/app/config") }
		issuedBefore := issued()
		if issuedBefore != 1 {
			t.Fatalf("the certificate was issued %d times before any fault, want 1", issuedBefore)
		}
		testControllerFaults(t, cp, ns)
		// The new leader serves: the kv VaultSecret (refreshInterval 5s)
		// is read again after the drain. By then it has looked at every
		// VaultSecret, and the certificate must not have been issued
		// again.
		readsAfterFaults := kvReads()
		eventually(t, 60*time.Second, func() error {
			if n := kvReads() - readsAfterFaults; n < 2 {
				return fmt.Errorf("%d reads of secret/data/app/config since the drain, want 2: the new leader is not serving", n)
			}
			return nil
		})
		if n := issued(); n != issuedBefore {
			t.Fatalf("the certificate was issued %d times across the leader's deletion and the drain, want %d: a new leader issued credentials again", n, issuedBefore)
		}
	})

	t.Run("the plugin as a static pod", func(t *testing.T) {
		testPluginStaticPod(t, cp, node, v, chart.Binaries["vaultkms-plugin"])
	})

	// The teardown cleanup runs anyway; run it now to check it: the next
	// run on this machine must find nothing of this one.
	t.Run("teardown leaves nothing", func(t *testing.T) {
		stopped := time.Now()
		node.Stop()
		t.Logf("node torn down in %s", time.Since(stopped).Round(100*time.Millisecond))
		if left := node.Leftovers(); len(left) > 0 {
			t.Fatalf("the node left behind:\n%s", strings.Join(left, "\n"))
		}
	})
}

// nodeAuditorNamespace is where InstallChartOnNode installs the chart.
const nodeAuditorNamespace = "vaultkms-system"

// prepareNodeAuditor gets the chart's auditor ready to run as on a
// kubeadm cluster: the node labelled a control-plane node (the auditor's
// nodeSelector), a read-only etcd identity (the control plane's etcd has
// auth on; this user's role may only read /registry/) and a Vault token
// that may only read the Transit key, both in Secrets
// (auditor.credentials.source secrets: a hostPath, the default, is not
// admitted in a namespace enforcing the restricted Pod Security Standard).
// It returns the chart values that enable it.
func prepareNodeAuditor(t *testing.T, cp *harness.ControlPlane, node *harness.Node, v *harness.Vault) []string {
	ctx := context.Background()
	if _, err := cp.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label the node a control-plane node: %v", err)
	}
	harness.RestrictedNamespace(t, cp, nodeAuditorNamespace)
	etcdFiles := map[string]string{"ca.crt": cp.EtcdReader.CA, "tls.crt": cp.EtcdReader.Cert, "tls.key": cp.EtcdReader.Key}
	data := map[string][]byte{}
	for k, f := range etcdFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data[k] = b
	}
	v.Policy("auditor-read", `path "transit/keys/kubernetes" { capabilities = ["read"] }`)
	token := v.Write("auth/token/create", map[string]any{"policies": []string{"auditor-read"}, "ttl": "2h"}).Auth.ClientToken
	for name, d := range map[string]map[string][]byte{"auditor-etcd": data, "auditor-vault-token": {"token": []byte(token)}} {
		if _, err := cp.Client.CoreV1().Secrets(nodeAuditorNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: d}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Secret %s: %v", name, err)
		}
	}
	etcdURL, err := neturl.Parse(cp.EtcdURL)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"auditor.enabled=true", "auditor.transitKey=kubernetes", "auditor.scanInterval=5s",
		"auditor.etcdEndpoints=https://" + net.JoinHostPort(node.HostIP.String(), etcdURL.Port()),
		"auditor.credentials.source=secrets", "auditor.etcdClientSecret=auditor-etcd", "auditor.vaultTokenSecret=auditor-vault-token"}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitSecretValue waits until Secret ns/name holds want at key.
func waitSecretValue(t *testing.T, cp *harness.ControlPlane, ns, name, key, want string, d time.Duration) {
	t.Helper()
	eventually(t, d, func() error {
		s, err := cp.Client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if string(s.Data[key]) != want {
			return fmt.Errorf("secret %s/%s key %s does not hold the expected value yet", ns, name, key)
		}
		return nil
	})
}

// readerDeployment is an application reading Secret "config" as the
// environment variable SECRET_VALUE and as the file /secret/password,
// restricted-compliant.
func readerDeployment(ns, image string) *appsv1.Deployment {
	labels := map[string]string{"app": "reader"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Containers: []corev1.Container{{
						Name: "reader", Image: image, ImagePullPolicy: corev1.PullNever,
						Env: []corev1.EnvVar{
							{Name: "NODEAPP_ENV", Value: "SECRET_VALUE"},
							{Name: "NODEAPP_FILE", Value: "/secret/password"},
							{Name: "SECRET_VALUE", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "config"}, Key: "password"}}},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "secret", MountPath: "/secret", ReadOnly: true}},
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
					Volumes: []corev1.Volume{{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "config"}}}},
				},
			},
		},
	}
}
