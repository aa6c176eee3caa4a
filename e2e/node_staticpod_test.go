package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// testPluginStaticPod runs deploy/static-pod.yaml as a static pod of the
// node's kubelet, as written but for the site values (the image, Vault's
// address, the health port: a shared host network) and the two hostPath
// directories, which stand in temporary directories (the test must not
// write the host's /etc and /run). kube-apiserver runs beside it as a
// static pod of the same kubelet, kubeadm-shaped, with
// deploy/encryption-config.yaml as shipped, and stores Secrets through
// it; removing the plugin's manifest (the kubelet stops the plugin) leaves
// reads working, and writes resume once the manifest is back.
func testPluginStaticPod(t *testing.T, cp *harness.ControlPlane, node *harness.Node, v *harness.Vault, pluginBinary string) {
	ctx := context.Background()
	pod := readStaticPod(t)
	c := &pod.Spec.Containers[0]

	tag := "e2e-" + harness.RandomSuffix()
	repo, _, _ := strings.Cut(c.Image, ":")
	ref := repo + ":" + tag
	harness.BuildImage(t, "plugin", ref, tag, map[string]string{"vaultkms-plugin": pluginBinary})
	node.LoadImage(ref)

	etcDir, runDir := pluginHost(t, v, c.Args)
	for i := range pod.Spec.Volumes {
		hp := pod.Spec.Volumes[i].HostPath
		switch {
		case hp == nil:
			t.Fatalf("static pod volume %s is not a hostPath", pod.Spec.Volumes[i].Name)
		case hp.Path == "/etc/vaultkms":
			hp.Path = etcDir
		case hp.Path == "/run/vaultkms":
			hp.Path = runDir
		default:
			t.Fatalf("static pod hostPath %s: the test has no stand-in for it", hp.Path)
		}
	}
	healthPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c.Image = ref
	c.Args = setArg(t, c.Args, "vault-addr", v.Addr)
	c.Args = setArg(t, c.Args, "health-addr", fmt.Sprintf("127.0.0.1:%d", healthPort))
	c.LivenessProbe.HTTPGet.Port = intstr.FromInt32(int32(healthPort))
	manifest, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	manifestPath := filepath.Join(node.Manifests, "vaultkms-plugin.yaml")
	writeManifest := func() {
		t.Helper()
		if err := os.WriteFile(manifestPath, manifest, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeManifest()

	socket := filepath.Join(runDir, "kms.sock")
	mirror := pod.Name + "-" + node.Name
	eventually(t, 90*time.Second, func() error {
		var st syscall.Stat_t
		if err := syscall.Stat(socket, &st); err != nil {
			return fmt.Errorf("no plugin socket yet: %v", err)
		}
		if st.Uid != 0 || st.Mode&0o777 != 0o600 {
			return fmt.Errorf("socket owner %d mode %o, want root 0600", st.Uid, st.Mode&0o777)
		}
		p, err := cp.Client.CoreV1().Pods(pod.Namespace).Get(ctx, mirror, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("mirror pod %s/%s: %v", pod.Namespace, mirror, err)
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("mirror pod %s is %s", mirror, p.Status.Phase)
		}
		return nil
	})

	ecfg, err := os.ReadFile(harness.RepoPath(t, "deploy/encryption-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const shipped = "unix:///run/vaultkms/kms.sock"
	if !strings.Contains(string(ecfg), shipped) {
		t.Fatalf("deploy/encryption-config.yaml does not name %s", shipped)
	}
	// kube-apiserver as kubeadm runs it: a static pod of the same kubelet,
	// deploy/encryption-config.yaml as shipped, mounted with the flags
	// and volumes of docs/install-kubeadm.md; the plugin's socket reaches
	// it through the shared hostPath, as on a control-plane node.
	api := node.StartStaticAPIServer(harness.StaticAPIServerOptions{EncryptionConfig: string(ecfg), SocketDir: runDir})
	client := kubernetes.NewForConfigOrDie(api.Config)
	apiPod, err := cp.Client.CoreV1().Pods("kube-system").Get(ctx, api.MirrorPod, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the static kube-apiserver's mirror pod: %v", err)
	}
	if apiPod.Spec.NodeName != node.Name || !apiPod.Spec.HostNetwork {
		t.Fatalf("mirror pod %s: node %q, host network %v", api.MirrorPod, apiPod.Spec.NodeName, apiPod.Spec.HostNetwork)
	}
	if body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz/kms-providers").DoRaw(ctx); err != nil || string(body) != "ok" {
		t.Fatalf("/readyz/kms-providers of the static kube-apiserver: %q, %v", body, err)
	}
	secrets := client.CoreV1().Secrets("default")
	write := func(name string) error {
		_, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{})
		return err
	}
	if err := write("through-the-static-pod"); err != nil {
		t.Fatalf("create a Secret through the plugin's static pod: %v", err)
	}
	if raw := cp.RawGet("/registry/secrets/default/through-the-static-pod"); !strings.HasPrefix(string(raw), "k8s:enc:kms:v2:vault:") {
		t.Fatalf("etcd holds %q..., want the kms v2 prefix of provider vault", raw[:min(len(raw), 30)])
	}

	// The plugin goes away as the kubelet stops a removed static pod.
	// (Writes may go on for a while: KMS v2 encrypts with its cached DEK
	// until that expires; the issue is reads and resuming.)
	if err := os.Remove(manifestPath); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		if _, err := cp.Client.CoreV1().Pods(pod.Namespace).Get(ctx, mirror, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("mirror pod %s still there", mirror)
		}
		if conn, err := net.Dial("unix", socket); err == nil {
			conn.Close()
			return fmt.Errorf("the plugin still answers on its socket")
		}
		return nil
	})
	got, err := secrets.Get(ctx, "through-the-static-pod", metav1.GetOptions{})
	if err != nil || string(got.Data["k"]) != "v" {
		t.Fatalf("read while the plugin is down: %v (the API server's DEK cache should serve it)", err)
	}
	restored := time.Now()
	writeManifest()
	after := "after-the-restart-" + harness.RandomSuffix()
	eventually(t, 90*time.Second, func() error {
		conn, err := net.Dial("unix", socket)
		if err != nil {
			return fmt.Errorf("the restored plugin does not answer yet: %v", err)
		}
		conn.Close()
		return write(after)
	})
	if raw := cp.RawGet("/registry/secrets/default/" + after); !strings.HasPrefix(string(raw), "k8s:enc:kms:v2:vault:") {
		t.Fatalf("after the restart etcd holds %q...", raw[:min(len(raw), 30)])
	}
	t.Logf("plugin static pod: Secrets stored k8s:enc:kms:v2:vault; reads served while it was gone; writes through it %s after its manifest came back",
		time.Since(restored).Round(100*time.Millisecond))

	testOperatorStepsOnNode(t, cp, api, socket)
}

// testOperatorStepsOnNode runs what docs/install-kubeadm.md has the
// operator do once kube-apiserver uses the plugin, with kubectl-vaultkms
// against this cluster: verify finds the Secrets written before (by the
// node's first API server, which has no EncryptionConfiguration) in
// plaintext; reencrypt rewrites them through the static kube-apiserver;
// then verify and status prove every Secret is under the plugin's key,
// and status finds that API server using it.
func testOperatorStepsOnNode(t *testing.T, cp *harness.ControlPlane, api *harness.StaticAPIServer, socket string) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := api.WriteKubeconfig(cp, kubeconfig); err != nil {
		t.Fatal(err)
	}
	// As the operator runs them: with a read-only etcd identity (etcd's
	// auth is on), which is all verify, status and reencrypt need.
	// The node's first API server has no EncryptionConfiguration (it
	// starts before any plugin exists), so what is written through it is
	// stored in plaintext, and the chart's controller writes through it.
	// The controller is scaled to zero first, so that what verify proves
	// afterwards is what reencrypt did, not a race with its next write.
	stopChartController(t, cp)
	common := append([]string{"--kubeconfig", kubeconfig, "--etcd-endpoints", cp.EtcdURL, "--kms-socket", "unix://" + socket,
		"--resources", "secrets", "--apiserver-metrics-url", api.URL + "/metrics"}, cp.EtcdReader.Args()...)
	verify := func() (scan.Report, int) {
		t.Helper()
		out, stderr, code := cli(t, append([]string{"verify", "-o", "json"}, common...)...)
		var rep scan.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("verify -o json: exit %d, %v\n%s%s", code, err, out, stderr)
		}
		return rep, code
	}
	before, code := verify()
	if code != 3 || before.Plaintext() == 0 || before.ByKeyID()[before.CurrentKeyID] < 2 {
		t.Fatalf("verify before reencrypt: exit %d (want 3), %d plaintext (want some), %d under the current key_id %s (want the 2 written through the static pod)",
			code, before.Plaintext(), before.ByKeyID()[before.CurrentKeyID], before.CurrentKeyID)
	}
	if out, stderr, code := cli(t, append([]string{"reencrypt", "-o", "json"}, common...)...); code != 0 {
		t.Fatalf("reencrypt through the static kube-apiserver: exit %d\n%s%s", code, out, stderr)
	}
	after, code := verify()
	if code != 0 || after.Plaintext() != 0 || after.Stale() != 0 || after.Total() < before.Total() {
		t.Fatalf("verify after reencrypt: exit %d, %d plaintext, %d stale, %d Secrets (before: %d): want 0, 0, 0 and all of them",
			code, after.Plaintext(), after.Stale(), after.Total(), before.Total())
	}
	out, stderr, code := cli(t, append([]string{"status", "-o", "json"}, common...)...)
	var st struct {
		Encrypted       bool
		APIServersAgree *bool
		Plaintext       int
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || !st.Encrypted || st.APIServersAgree == nil || !*st.APIServersAgree {
		t.Fatalf("status after reencrypt: exit %d, %v: want exit 0, encrypted, the API server agreeing\n%s%s", code, err, out, stderr)
	}
	t.Logf("kubectl vaultkms on the node's cluster: %d plaintext Secrets before reencrypt, %d Secrets under %s after; status: encrypted, the API server agrees",
		before.Plaintext(), after.Total(), after.CurrentKeyID)

	// The chart's auditor, in its pod with the read-only etcd identity,
	// reaches the same verdict on its own.
	es := waitEncryptionStatus(t, cp, func(es *v1alpha1.EncryptionStatus) bool {
		return cond(es, v1alpha1.ConditionEncrypted, metav1.ConditionTrue, v1alpha1.ReasonEncryptionCompleted)
	})
	if es.Status.CurrentKeyID != after.CurrentKeyID {
		t.Errorf("the auditor's EncryptionStatus names key_id %q, verify %q", es.Status.CurrentKeyID, after.CurrentKeyID)
	}
	pods, err := cp.Client.CoreV1().Pods(nodeAuditorNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=auditor"})
	if err != nil || len(pods.Items) != 1 || !podReady(&pods.Items[0]) || pods.Items[0].Status.ContainerStatuses[0].RestartCount != 0 {
		t.Fatalf("auditor pods: %v, %+v: want one, Ready, never restarted", err, pods)
	}
	t.Logf("the auditor's EncryptionStatus: Encrypted=True (%s), key_id %s", v1alpha1.ReasonEncryptionCompleted, es.Status.CurrentKeyID)
}

// stopChartController scales the chart's controller Deployment to zero
// and waits until none of its pods is left.
func stopChartController(t *testing.T, cp *harness.ControlPlane) {
	t.Helper()
	ctx := context.Background()
	const selector = "app.kubernetes.io/component=controller"
	deps, err := cp.Client.AppsV1().Deployments(nodeAuditorNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(deps.Items) != 1 {
		t.Fatalf("the chart's controller Deployment: %v (%d found)", err, len(deps.Items))
	}
	if _, err := cp.Client.AppsV1().Deployments(nodeAuditorNamespace).Patch(ctx, deps.Items[0].Name, types.MergePatchType,
		[]byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale the controller to zero: %v", err)
	}
	eventually(t, 60*time.Second, func() error {
		pods, err := cp.Client.CoreV1().Pods(nodeAuditorNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d controller pods still there", len(pods.Items))
		}
		return nil
	})
}
