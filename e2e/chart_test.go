package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

const chartVaultAddr = "vault.addr=https://vault.example:8200"

// helmTemplate renders the chart as release name in namespace.
func helmTemplate(t *testing.T, name, namespace string, values ...string) (string, error) {
	t.Helper()
	// The chart's kubeVersion refuses helm template's default of 1.20.
	args := []string{"template", name, harness.ChartPath(t), "--namespace", namespace, "--kube-version", "1.37.2"}
	for _, v := range values {
		args = append(args, "--set", v)
	}
	return harness.Helm(t, "", args...)
}

// renderedObjects splits a rendered manifest into objects.
func renderedObjects(t *testing.T, manifest string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, doc := range strings.Split(manifest, "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered manifest: %v\n%s", err, doc)
		}
		if o != nil {
			out = append(out, o)
		}
	}
	return out
}

func objName(o map[string]any) string {
	md, _ := o["metadata"].(map[string]any)
	return fmt.Sprint(md["name"])
}

func TestChartLintAndRender(t *testing.T) {
	t.Parallel()
	auditorOn := []string{chartVaultAddr, "auditor.enabled=true", "auditor.etcdEndpoints=https://10.0.0.1:2379",
		"auditor.credentials.source=secrets", "auditor.etcdClientSecret=etcd-ro", "auditor.vaultTokenSecret=auditor-token", "auditor.transitKey=kubernetes"}
	allOn := append(append([]string(nil), auditorOn...), "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
		"controller.podDisruptionBudget.enabled=true", "controller.replicas=2", "vault.caCertSecret=vault-ca", "vault.namespace=team")

	t.Run("helm lint --strict", func(t *testing.T) {
		for _, values := range [][]string{{chartVaultAddr}, allOn} {
			args := []string{"lint", "--strict", harness.ChartPath(t)}
			for _, v := range values {
				args = append(args, "--set", v)
			}
			if out, err := harness.Helm(t, "", args...); err != nil {
				t.Fatalf("%v", err)
			} else if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint: %s", out)
			}
		}
	})

	t.Run("bad values are refused, naming the value", func(t *testing.T) {
		for _, tc := range []struct {
			set  []string
			want string
		}{
			{nil, "vault.addr is required"},
			{[]string{"vault.addr=vault.example:8200"}, "/vault/addr"},
			{[]string{chartVaultAddr, "controller.replicas=0"}, "/controller/replicas"},
			{[]string{chartVaultAddr, "controller.image.tag=latest"}, "/controller/image/tag"},
			{[]string{chartVaultAddr, "controller.logLevel=loud"}, "/controller/logLevel"},
			{[]string{chartVaultAddr, "controler.replicas=2"}, "'controler' not allowed"},
			{[]string{chartVaultAddr, "controller.extraArgs[0]=leader-elect"}, "/controller/extraArgs/0"},
			{[]string{chartVaultAddr, "auditor.enabled=true"}, "/auditor/etcdEndpoints"},
			{[]string{chartVaultAddr, "auditor.enabled=true", "auditor.credentials.source=secrets", "auditor.etcdEndpoints=https://e:2379", "auditor.etcdClientSecret=s", "auditor.transitKey=k"}, "/auditor/vaultTokenSecret"},
			// With credentials on the nodes (the default) a Secret name would be ignored.
			{[]string{chartVaultAddr, "auditor.enabled=true", "auditor.etcdEndpoints=https://e:2379", "auditor.etcdClientSecret=s", "auditor.transitKey=k"}, "/auditor/etcdClientSecret"},
			{[]string{chartVaultAddr, "auditor.credentials.source=vault"}, "/auditor/credentials/source"},
			{[]string{chartVaultAddr, "auditor.credentials.hostPath=relative/dir"}, "/auditor/credentials/hostPath"},
			{[]string{chartVaultAddr, "auditor.etcdEndpoints=e:2379"}, "/auditor/etcdEndpoints"},
			{[]string{chartVaultAddr, "controller.serviceAccount.create=false"}, "controller.serviceAccount.name is required"},
			{[]string{chartVaultAddr, "metrics.service.enabled=false", "metrics.serviceMonitor.enabled=true"}, "metrics.serviceMonitor.enabled needs metrics.service.enabled"},
			{[]string{chartVaultAddr, "controller.replicas=2", "controller.leaderElect=false"}, "/controller/leaderElect"},
			{[]string{chartVaultAddr, "controller.podDisruptionBudget.enabled=true"}, "/controller/replicas"},
			{[]string{chartVaultAddr, "controller.image.digest=sha256:beef"}, "/controller/image/digest"},
			{[]string{chartVaultAddr, "auditor.transitMount=/transit"}, "/auditor/transitMount"},
			{[]string{chartVaultAddr, "metrics.prometheusRule.scanMaxAgeSeconds=10"}, "/metrics/prometheusRule/scanMaxAgeSeconds"},
		} {
			out, err := helmTemplate(t, "r", "ns", tc.set...)
			if err == nil {
				t.Errorf("--set %v rendered; want it refused with %q", tc.set, tc.want)
				continue
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("--set %v: the error does not name %q:\n%s", tc.set, tc.want, out)
			}
		}
	})

	t.Run("two releases in two namespaces share no cluster-scoped name", func(t *testing.T) {
		names := map[string]string{}
		for _, ns := range []string{"team-a", "team-b"} {
			out, err := helmTemplate(t, "vaultkms", ns, allOn...)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range renderedObjects(t, out) {
				if k := o["kind"]; k == "ClusterRole" || k == "ClusterRoleBinding" {
					key := fmt.Sprintf("%s/%s", k, objName(o))
					if prev, ok := names[key]; ok {
						t.Errorf("%s is rendered by the releases in %s and %s", key, prev, ns)
					}
					names[key] = ns
				}
			}
		}
		if len(names) != 12 {
			t.Errorf("want 4 ClusterRoles (controller, auditor, VaultSecrets view and edit) and 2 bindings per release, got %v", names)
		}
	})

	// The controller reads Secrets in every namespace; by default the
	// auditor's credentials are files on the control-plane nodes, so no
	// Secret the controller could read holds them.
	t.Run("by default the auditor's credentials are in no Secret", func(t *testing.T) {
		out, err := helmTemplate(t, "vaultkms", "kube-system", chartVaultAddr, "auditor.enabled=true", "auditor.etcdEndpoints=https://10.0.0.1:2379",
			"auditor.transitKey=kubernetes", "auditor.rotation.enabled=true", "auditor.rotation.encryptionConfigResources=secrets")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, o := range renderedObjects(t, out) {
			if o["kind"] != "Deployment" || !strings.HasSuffix(objName(o), "-auditor") {
				continue
			}
			found = true
			text, _ := yaml.Marshal(o)
			if strings.Contains(string(text), "secretName") {
				t.Errorf("the auditor mounts a Secret (readable by the controller):\n%s", text)
			}
			for _, want := range []string{"path: /etc/vaultkms/auditor", "type: Directory", "--etcd-cert=/etc/vaultkms/auditor/etcd/tls.crt",
				"--vault-token-file=/etc/vaultkms/auditor/vault-token", "--rotation-token-file=/etc/vaultkms/auditor/rotation-token"} {
				if !strings.Contains(string(text), want) {
					t.Errorf("auditor Deployment lacks %q:\n%s", want, text)
				}
			}
		}
		if !found {
			t.Fatal("no auditor Deployment rendered")
		}
	})

	t.Run("the Grafana dashboard is off by default, then a labelled ConfigMap of valid JSON", func(t *testing.T) {
		dashboards := func(values ...string) []map[string]any {
			t.Helper()
			out, err := helmTemplate(t, "vaultkms", "kube-system", values...)
			if err != nil {
				t.Fatal(err)
			}
			var cms []map[string]any
			for _, o := range renderedObjects(t, out) {
				if o["kind"] == "ConfigMap" && strings.HasSuffix(objName(o), "-dashboard") {
					cms = append(cms, o)
				}
			}
			return cms
		}
		if got := dashboards(chartVaultAddr); len(got) != 0 {
			t.Fatalf("the default render has a dashboard ConfigMap: %v", got)
		}
		got := dashboards(chartVaultAddr, "grafana.dashboards.enabled=true", "grafana.dashboards.namespace=monitoring")
		if len(got) != 1 {
			t.Fatalf("want one dashboard ConfigMap, got %d", len(got))
		}
		md, _ := got[0]["metadata"].(map[string]any)
		labels, _ := md["labels"].(map[string]any)
		if labels["grafana_dashboard"] != "1" || md["namespace"] != "monitoring" {
			t.Errorf("dashboard ConfigMap metadata %v: want label grafana_dashboard \"1\" and namespace monitoring", md)
		}
		data, _ := got[0]["data"].(map[string]any)
		var dash struct {
			Panels []any `json:"panels"`
		}
		if err := json.Unmarshal([]byte(fmt.Sprint(data["vaultkms.json"])), &dash); err != nil || len(dash.Panels) == 0 {
			t.Errorf("vaultkms.json is not a dashboard with panels (%v)", err)
		}
	})

	t.Run("etcd credentials go to the auditor only, never empty", func(t *testing.T) {
		out, err := helmTemplate(t, "vaultkms", "kube-system", allOn...)
		if err != nil {
			t.Fatal(err)
		}
		objs := renderedObjects(t, out)
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[fmt.Sprint(o["kind"])]++
			if o["kind"] != "Deployment" {
				continue
			}
			text, _ := yaml.Marshal(o)
			if strings.Contains(string(text), "secretName: \"\"") || strings.Contains(string(text), "secretName: null") {
				t.Errorf("%s mounts a Secret with an empty name:\n%s", objName(o), text)
			}
			isAuditor := strings.HasSuffix(objName(o), "-auditor")
			if got := strings.Contains(string(text), "etcd"); got != isAuditor {
				t.Errorf("%s mentions etcd: %v, want %v:\n%s", objName(o), got, isAuditor, text)
			}
			if isAuditor {
				for _, want := range []string{"secretName: etcd-ro", "secretName: auditor-token", "node-role.kubernetes.io/control-plane", "effect: NoSchedule", "--transit-key=kubernetes",
					"--transit-mount=transit", "--vault-namespace=team", "containerPort: 8080", "path: /healthz", "path: /readyz"} {
					if !strings.Contains(string(text), want) {
						t.Errorf("auditor Deployment lacks %q:\n%s", want, text)
					}
				}
			}
		}
		for _, k := range []string{"Deployment", "ServiceAccount", "Service", "ServiceMonitor", "PrometheusRule", "PodDisruptionBudget"} {
			if kinds[k] == 0 {
				t.Errorf("nothing of kind %s rendered with everything on: %v", k, kinds)
			}
		}
		// Every component the chart runs has a scrape path.
		for _, k := range []string{"Service", "ServiceMonitor"} {
			for _, c := range []string{"controller", "auditor"} {
				found := false
				for _, o := range objs {
					text, _ := yaml.Marshal(o)
					found = found || (o["kind"] == k && strings.Contains(string(text), "app.kubernetes.io/component: "+c))
				}
				if !found {
					t.Errorf("no %s selects the %s", k, c)
				}
			}
		}
		def, err := helmTemplate(t, "vaultkms", "kube-system", chartVaultAddr)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range renderedObjects(t, def) {
			if strings.Contains(objName(o), "auditor") {
				t.Errorf("the default render has %s %s; the auditor is off by default", o["kind"], objName(o))
			}
		}
	})
}

// TestChartRotation: auditor.rotation is off by default and then grants
// nothing; on, it adds exactly the autopilot's rules (the encrypted
// resources named, nothing else) and a token Secret of its own.
func TestChartRotation(t *testing.T) {
	t.Parallel()
	auditorOn := []string{chartVaultAddr, "auditor.enabled=true", "auditor.etcdEndpoints=https://10.0.0.1:2379",
		"auditor.credentials.source=secrets", "auditor.etcdClientSecret=etcd-ro", "auditor.vaultTokenSecret=auditor-token", "auditor.transitKey=kubernetes"}
	rotationOn := append(append([]string(nil), auditorOn...), "auditor.rotation.enabled=true", "auditor.rotation.vaultTokenSecret=rotation-token",
		"auditor.rotation.encryptionConfigResources=secrets\\,configmaps", "auditor.rotation.encryptedResources[0].apiGroup=",
		"auditor.rotation.encryptedResources[0].resources={secrets,configmaps}")
	var apiservers string // the auditor's Role in the namespace default, of the last render
	auditorRole := func(values ...string) (string, string) {
		t.Helper()
		out, err := helmTemplate(t, "vaultkms", "kube-system", values...)
		if err != nil {
			t.Fatal(err)
		}
		var role, deploy string
		apiservers = ""
		for _, o := range renderedObjects(t, out) {
			text, _ := yaml.Marshal(o)
			switch {
			case o["kind"] == "ClusterRole" && strings.HasSuffix(objName(o), "-auditor"):
				role = string(text)
			case o["kind"] == "Role" && strings.HasSuffix(objName(o), "-auditor-apiservers"):
				apiservers = string(text)
			case o["kind"] == "Deployment" && strings.HasSuffix(objName(o), "-auditor"):
				deploy = string(text)
			}
		}
		return role, deploy
	}
	role, deploy := auditorRole(auditorOn...)
	if apiservers != "" {
		t.Errorf("with auditor.rotation off the auditor gets a Role in default:\n%s", apiservers)
	}
	for _, no := range []string{"rotationpolicies", "- secrets\n", "- configmaps\n", "/metrics", "endpointslices"} {
		if strings.Contains(role, no) {
			t.Errorf("with auditor.rotation off the auditor's ClusterRole grants %s:\n%s", no, role)
		}
	}
	if strings.Contains(deploy, "--rotation") {
		t.Errorf("with auditor.rotation off the auditor runs with --rotation:\n%s", deploy)
	}
	role, deploy = auditorRole(rotationOn...)
	for _, want := range []string{"rotationpolicies", "rotationpolicies/status", "/metrics", "- secrets\n", "- configmaps\n"} {
		if !strings.Contains(role, want) {
			t.Errorf("with auditor.rotation on the auditor's ClusterRole lacks %s:\n%s", want, role)
		}
	}
	// EndpointSlices only in default (where the kubernetes Service is), and
	// the re-encrypted resources are read by name and updated, never listed.
	if strings.Contains(role, "endpointslices") || !strings.Contains(apiservers, "endpointslices") || !strings.Contains(apiservers, "namespace: default") {
		t.Errorf("endpointslices must be granted in default only; ClusterRole:\n%s\nRole:\n%s", role, apiservers)
	}
	if i := strings.Index(role, "- secrets\n"); i < 0 || strings.Contains(role[i:], "- list") {
		t.Errorf("the re-encrypted resources get list; want get and update only:\n%s", role)
	}
	for _, want := range []string{"--rotation", "--rotation-token-file=/etc/vaultkms/rotation-token/token", "secretName: rotation-token", "--resources=secrets,configmaps"} {
		if !strings.Contains(deploy, want) {
			t.Errorf("with auditor.rotation on the auditor Deployment lacks %s:\n%s", want, deploy)
		}
	}
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{append(append([]string(nil), auditorOn...), "auditor.rotation.enabled=true"), "auditor.rotation.vaultTokenSecret is required"},
		{append(append([]string(nil), auditorOn...), "auditor.rotation.enabled=true", "auditor.rotation.vaultTokenSecret=auditor-token"), "must differ from auditor.vaultTokenSecret"},
		{append(append([]string(nil), auditorOn...), "auditor.rotation.enabled=true", "auditor.rotation.vaultTokenSecret=r"), "auditor.rotation.encryptionConfigResources is required"},
		{append(append([]string(nil), auditorOn...), "auditor.rotation.workers=0"), "/auditor/rotation/workers"},
	} {
		out, err := helmTemplate(t, "r", "ns", tc.set...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("--set %v: %v, want a refusal naming %q:\n%s", tc.set, err, tc.want, out)
		}
	}
}

// hostController runs the controller binary as a host process the way
// kubelet would run the rendered Deployment: its args, its env
// (POD_NAMESPACE from the downward API), its Secret volumes written to a
// directory standing in for the mount path, and the identity of its
// ServiceAccount (a TokenRequest token). Only the two listen addresses
// move to free ports on 127.0.0.1.
type hostController struct {
	cmd        *exec.Cmd
	done       chan struct{}
	log        *harness.SyncBuffer
	metricsURL string
	readyURL   string
}

func runRendered(t *testing.T, cp *harness.ControlPlane, r *harness.Release, bin string) *hostController {
	t.Helper()
	d := r.Deployment("-controller")
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	ctx := context.Background()
	mounts := t.TempDir()
	rewrite := map[string]string{}
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.EmptyDir != nil {
				// Scratch space (the connections' CA files under /tmp):
				// the host process has its own temp dir.
				continue
			}
			if v.Secret == nil {
				t.Fatalf("rendered volume %s is neither a Secret nor an emptyDir", v.Name)
			}
			s, err := cp.Client.CoreV1().Secrets(r.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("Secret %s of volume %s: %v", v.Secret.SecretName, v.Name, err)
			}
			dir := filepath.Join(mounts, v.Name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for k, val := range s.Data {
				if err := os.WriteFile(filepath.Join(dir, k), val, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			rewrite[m.MountPath] = dir
		}
	}
	mport, _ := harness.FreePort()
	pport, _ := harness.FreePort()
	var args []string
	for _, a := range c.Args {
		switch {
		case strings.HasPrefix(a, "--metrics-bind-address="):
			a = fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", mport)
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", pport)
		}
		for from, to := range rewrite {
			a = strings.ReplaceAll(a, from+"/", to+"/")
		}
		args = append(args, a)
	}
	env := []string{"KUBECONFIG=" + cp.ServiceAccountKubeconfig(r.Namespace, spec.ServiceAccountName)}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+r.Namespace)
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		default:
			t.Fatalf("rendered env %s: the test cannot resolve it", e.Name)
		}
	}
	hc := &hostController{log: &harness.SyncBuffer{}, done: make(chan struct{}),
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport),
		readyURL:   fmt.Sprintf("http://127.0.0.1:%d%s", pport, c.ReadinessProbe.HTTPGet.Path)}
	hc.cmd = exec.Command(bin, args...)
	hc.cmd.Env = append(os.Environ(), env...)
	hc.cmd.Stdout, hc.cmd.Stderr = hc.log, hc.log
	hc.cmd.SysProcAttr = harness.KillWithParent(&syscall.SysProcAttr{})
	if err := hc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = hc.cmd.Wait(); close(hc.done) }()
	t.Cleanup(hc.kill)
	return hc
}

func (hc *hostController) kill() {
	_ = hc.cmd.Process.Kill()
	<-hc.done
}

func (hc *hostController) get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (hc *hostController) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _ := hc.get(hc.readyURL)
		if code == 200 {
			return
		}
		select {
		case <-hc.done:
			t.Fatalf("the controller exited:\n%s", hc.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller is not ready after 60s:\n%s", hc.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (hc *hostController) isLeader() bool {
	_, body := hc.get(hc.metricsURL)
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "leader_election_master_status{") && strings.HasSuffix(line, " 1") {
			return true
		}
	}
	return false
}

func readCRD(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(harness.RepoPath(t, path))
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	if err := yaml.Unmarshal(b, &o); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &unstructured.Unstructured{Object: o}
}

const leaseName = "vaultkms-controller.secrets.vaultkms.io"

func leaseHolder(t *testing.T, cp *harness.ControlPlane, ns string) (string, int32) {
	t.Helper()
	l, err := cp.Client.CoordinationV1().Leases(ns).Get(context.Background(), leaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var holder string
	var dur int32
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseDurationSeconds != nil {
		dur = *l.Spec.LeaseDurationSeconds
	}
	return holder, dur
}

// TestChartInstall installs the chart with `helm install` into a real API
// server twice, as release "vaultkms" in two namespaces, and runs the
// controller with exactly what Helm rendered: two replicas with leader
// election in one release, one in the other.
func TestChartInstall(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{})
	ctx := context.Background()
	ca, err := os.ReadFile(v.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	nsA, nsB := "vaultkms-a", "vaultkms-b"
	for _, ns := range []string{nsA, nsB} {
		cp.Namespace(ns)
		_, err := cp.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "vault-ca"}, Data: map[string][]byte{"ca.crt": ca},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	// An older release's CRD, as a cluster upgraded from it has: without
	// the printer columns the current one declares.
	crds := dynamic.NewForConfigOrDie(cp.Config).Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	current := readCRD(t, "charts/vaultkms/crds/secrets.vaultkms.io_vaultsecrets.yaml")
	old := current.DeepCopy()
	unstructured.RemoveNestedField(old.Object, "spec", "versions")
	versions, _, _ := unstructured.NestedSlice(current.Object, "spec", "versions")
	for _, v := range versions {
		delete(v.(map[string]any), "additionalPrinterColumns")
	}
	if err := unstructured.SetNestedSlice(old.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if _, err := crds.Create(ctx, old, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	printerColumns := func() int {
		t.Helper()
		got, err := crds.Get(ctx, current.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs, _, _ := unstructured.NestedSlice(got.Object, "spec", "versions")
		cols, _, _ := unstructured.NestedSlice(vs[0].(map[string]any), "additionalPrinterColumns")
		return len(cols)
	}

	relA := cp.InstallChart("vaultkms", nsA, "vault.addr="+v.Addr, "vault.caCertSecret=vault-ca", "controller.replicas=2", "controller.podDisruptionBudget.enabled=true")
	relB := cp.InstallChart("vaultkms", nsB, "vault.addr="+v.Addr, "vault.caCertSecret=vault-ca")

	rl, err := cp.Client.Discovery().ServerResourcesForGroupVersion("secrets.vaultkms.io/v1alpha1")
	if err != nil {
		t.Fatalf("helm install did not install the CRDs: %v", err)
	}
	served := map[string]bool{}
	for _, r := range rl.APIResources {
		served[r.Name] = true
	}
	if !served["vaultsecrets"] || !served["encryptionstatuses"] {
		t.Fatalf("served after helm install: %v, want vaultsecrets and encryptionstatuses", served)
	}
	// Helm leaves an existing CRD alone; the command of docs/upgrade.md
	// (kubectl apply --server-side --force-conflicts -f charts/vaultkms/crds)
	// upgrades it, over the fields another manager wrote.
	if n := printerColumns(); n != 0 {
		t.Fatalf("helm install changed the existing CRD (%d printer columns); the upgrade doc would be wrong", n)
	}
	for _, f := range []string{"secrets.vaultkms.io_vaultsecrets.yaml", "secrets.vaultkms.io_encryptionstatuses.yaml"} {
		crd := readCRD(t, "charts/vaultkms/crds/"+f)
		if _, err := crds.Apply(ctx, crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "kubectl", Force: true}); err != nil {
			t.Fatalf("server-side apply of %s: %v", f, err)
		}
	}
	if n := printerColumns(); n == 0 {
		t.Fatalf("the server-side apply did not upgrade the CRD")
	}

	if got := relA.Deployment("-controller").Spec.Replicas; got == nil || *got != 2 {
		t.Fatalf("rendered replicas = %v, want 2", got)
	}

	bin := harness.GoBuild(t, "github.com/vaultkms/vaultkms/cmd/vaultkms-controller")
	b := runRendered(t, cp, relB, bin)
	a1 := runRendered(t, cp, relA, bin)
	a1.waitReady(t)
	var first string
	for deadline := time.Now().Add(60 * time.Second); first == ""; time.Sleep(200 * time.Millisecond) {
		if first, _ = leaseHolder(t, cp, nsA); first == "" && time.Now().After(deadline) {
			t.Fatalf("no Lease %s/%s after 60s; controller log:\n%s", nsA, leaseName, a1.log.String())
		}
	}
	for deadline := time.Now().Add(30 * time.Second); !a1.isLeader(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first replica holds the Lease but does not report leader_election_master_status 1:\n%s", a1.log.String())
		}
	}
	a2 := runRendered(t, cp, relA, bin)
	a2.waitReady(t)
	b.waitReady(t)
	if a2.isLeader() {
		t.Fatalf("the second replica leads while the first holds the Lease")
	}
	// Ready (readyz) comes before the first election attempt: wait for it
	// as for release A rather than read the Lease once.
	eventually(t, 60*time.Second, func() error {
		if h, _ := leaseHolder(t, cp, nsB); h == "" {
			return fmt.Errorf("release %s has no leader of its own:\n%s", nsB, b.log.String())
		}
		return nil
	})

	// client-go records the election as a core/v1 Event in the release
	// namespace; the chart's Role must allow it.
	var found bool
	for deadline := time.Now().Add(20 * time.Second); !found && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		evs, err := cp.Client.CoreV1().Events(nsA).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			found = found || e.Reason == "LeaderElection"
		}
	}
	if !found {
		t.Errorf("no LeaderElection event in %s", nsA)
	}

	// Kill the leader without letting it release the Lease (a node dies).
	_, duration := leaseHolder(t, cp, nsA)
	a1.kill()
	killed := time.Now()
	var took time.Duration
	for {
		if h, _ := leaseHolder(t, cp, nsA); h != "" && h != first && a2.isLeader() {
			took = time.Since(killed)
			break
		}
		if time.Since(killed) > 2*time.Minute {
			t.Fatalf("the second replica did not take over within 2m:\n%s", a2.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The follower dates the Lease from when it last saw it renewed, up to
	// one retry period (2s, jittered up to 2.4s) after the kill, and polls
	// again up to one retry period after expiry: at most lease + 4.8s, plus
	// slack for a loaded machine.
	limit := time.Duration(duration)*time.Second + 8*time.Second
	t.Logf("leader killed: the other replica took over after %s (lease duration %ds)", took.Round(100*time.Millisecond), duration)
	if took > limit {
		t.Errorf("takeover took %s, more than the lease duration %ds plus two retry periods and slack", took, duration)
	}

	for name, hc := range map[string]*hostController{"a1": a1, "a2": a2, "b": b} {
		if strings.Contains(hc.log.String(), "forbidden") {
			t.Errorf("controller %s was refused something its RBAC should allow:\n%s", name, hc.log.String())
		}
	}

	// Uninstalling one release leaves the other's cluster-scoped RBAC.
	crA := relA.Find("ClusterRole", "-controller")
	crB := relB.Find("ClusterRole", "-controller")
	relB.Uninstall()
	if _, err := cp.Client.RbacV1().ClusterRoles().Get(ctx, objName(crB), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRole %s still there after helm uninstall: %v", objName(crB), err)
	}
	if _, err := cp.Client.RbacV1().ClusterRoles().Get(ctx, objName(crA), metav1.GetOptions{}); err != nil {
		t.Errorf("uninstalling %s removed the other release's ClusterRole %s: %v", nsB, objName(crA), err)
	}
	if _, err := cp.Client.Discovery().ServerResourcesForGroupVersion("secrets.vaultkms.io/v1alpha1"); err != nil {
		t.Errorf("helm uninstall removed the CRDs (and with them every VaultSecret): %v", err)
	}
}
