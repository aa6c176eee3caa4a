package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	neturl "net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/verifier/apiservers"
	"github.com/vaultkms/vaultkms/verifier/scan"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

// cli runs kubectl-vaultkms and returns stdout, stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.GoBuild(t, "github.com/vaultkms/vaultkms/cmd/kubectl-vaultkms"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// etcdTruth counts secrets by provider label and key_id with a plain read
// of etcd, independent of the scanner.
func etcdTruth(t *testing.T, cp *harness.ControlPlane) (total int, byProvider, byKeyID map[string]int) {
	t.Helper()
	return etcdTruthAt(t, cp, "/registry/secrets/")
}

func etcdTruthAt(t *testing.T, cp *harness.ControlPlane, prefix string) (total int, byProvider, byKeyID map[string]int) {
	t.Helper()
	resp, err := cp.Etcd().Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	byProvider, byKeyID = map[string]int{}, map[string]int{}
	for _, kv := range resp.Kvs {
		v, err := storedvalue.Classify(kv.Value)
		if err != nil {
			t.Fatalf("%s: %v", kv.Key, err)
		}
		byProvider[v.Label()]++
		if v.KeyID != "" {
			byKeyID[v.KeyID]++
		}
	}
	return len(resp.Kvs), byProvider, byKeyID
}

// TestVerifyReencryptTrim runs a whole rotation with the CLI, Secrets and
// ConfigMaps both under KMS, and checks each gate of trim against a real
// API server, etcd and Vault: trim refuses while ConfigMaps are still under
// version 1 although every Secret is migrated, refuses on a wrong prefix
// (no evidence, exit 4), refuses while an API server is unreadable or has
// not been on the new key_id for the settle time, and then goes ahead.
func TestVerifyReencryptTrim(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, RefreshInterval: time.Second})
	keyID1 := p.WaitKeyID(t, 20*time.Second)
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{EncryptionConfig: harness.IdentityFirstEncryptionConfig(provider, p.Socket, "secrets", "configmaps"),
		CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	ctx := context.Background()
	values := map[string]string{}
	create := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			name := fmt.Sprintf("%s-%d", prefix, i)
			values[name] = "secret-" + name
			if _, err := cp.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"v": []byte(values[name])},
			}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Plaintext first, then encrypted under version 1, then version 2.
	create("plain", 5)
	cp.SetEncryptionConfig(harness.KMSEncryptionConfig(provider, p.Socket, "secrets", "configmaps"))
	create("v1", 6)
	for i := range 4 {
		if _, err := cp.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d", i)}, Data: map[string]string{"k": "v"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := harness.TokenFile(t, v.RootToken)
	// Rotate with the CLI, as an operator would, with their own token.
	out, stderr, code := cli(t, "rotate", "--vault-addr", v.Addr, "--vault-ca-cert", v.CA.CertFile,
		"--vault-token-file", tokenFile, "--transit-key", key, "-o", "json")
	var rot struct {
		PreviousKeyID, CurrentKeyID string
		Version                     int
	}
	if err := json.Unmarshal([]byte(out), &rot); code != 0 || err != nil || rot.Version != 2 || rot.PreviousKeyID != keyID1 {
		t.Fatalf("rotate: exit %d, %v: %s%s", code, err, out, stderr)
	}
	// A second rotation before this one is finished is refused.
	if out, stderr, code := cli(t, "rotate", "--vault-addr", v.Addr, "--vault-ca-cert", v.CA.CertFile,
		"--vault-token-file", tokenFile, "--transit-key", key); code != 4 || !strings.Contains(stderr, "unfinished") {
		t.Fatalf("second rotate: exit %d, want 4 naming the unfinished rotation\n%s%s", code, out, stderr)
	}
	deadline := time.Now().Add(150 * time.Second)
	for i := 0; ; i++ {
		create(fmt.Sprintf("probe%d", i), 1)
		sv, _ := storedvalue.Classify(cp.RawGet(fmt.Sprintf("/registry/secrets/default/probe%d-0", i)))
		if sv.KeyID != keyID1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("API server did not switch to the rotated key")
		}
		time.Sleep(2 * time.Second)
	}
	switched := time.Now()
	create("v2", 7)
	keyID2 := p.Plugin.CurrentKeyID()

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	// The API server advertises a non-loopback address (Endpoints refuse
	// loopback) but listens on 127.0.0.1 only: discovery finds it, and
	// the metrics are read from the address it listens on, as an operator
	// behind a load balancer lists each API server.
	found, err := apiservers.Discover(ctx, cp.Client)
	host, _ := neturl.Parse(cp.Config.Host)
	if err != nil || len(found) != 1 || !strings.HasSuffix(found[0], ":"+host.Port()+"/metrics") {
		t.Fatalf("API servers found from the kubernetes EndpointSlices: %v %v (API server at %s)", found, err, cp.Config.Host)
	}
	metricsURL := strings.TrimSuffix(cp.Config.Host, "/") + "/metrics"
	common := []string{"--kubeconfig", kubeconfig, "--etcd-endpoints", cp.EtcdURL, "--vault-addr", v.Addr, "--vault-ca-cert", v.CA.CertFile,
		"--vault-token-file", tokenFile, "--transit-key", key, "--kms-socket", "unix://" + p.Socket, "--apiserver-metrics-url", metricsURL}

	total, byProvider, byKeyID := etcdTruth(t, cp)
	out, stderr, code = cli(t, append([]string{"verify", "-o", "json"}, common...)...)
	if code != 3 {
		t.Fatalf("verify with stale objects exited %d, want 3\n%s\n%s", code, out, stderr)
	}
	var rep scan.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("verify -o json: %v\n%s", err, out)
	}
	if rep.CurrentKeyID != keyID2 || len(rep.Resources) != 1 {
		t.Fatalf("report %+v", rep)
	}
	r := rep.Resources[0]
	if r.Total != total || fmt.Sprint(r.ByProvider) != fmt.Sprint(byProvider) || fmt.Sprint(r.ByKeyID) != fmt.Sprint(byKeyID) {
		t.Fatalf("verify counted %d %v %v; etcd holds %d %v %v", r.Total, r.ByProvider, r.ByKeyID, total, byProvider, byKeyID)
	}
	if r.Plaintext != 5 || r.Current != byKeyID[keyID2] || r.Stale != total-byKeyID[keyID2] || byKeyID[keyID1] < 6 {
		t.Fatalf("plaintext %d current %d stale %d; etcd: %v", r.Plaintext, r.Current, r.Stale, byKeyID)
	}
	if _, _, code := cli(t, append([]string{"verify", "--fail-on", "none"}, common...)...); code != 0 {
		t.Fatalf("verify --fail-on none exited %d", code)
	}

	// status takes its resources from the EncryptionConfiguration and
	// exits 3: action is needed.
	out, stderr, code = cli(t, append([]string{"status", "-o", "json", "--encryption-config", cp.EncryptionConfigPath}, common...)...)
	var st struct {
		Rotation         struct{ Stage string }
		Stale            int
		Encrypted        bool
		EncryptionConfig []struct{ Providers []string }
		Scan             scan.Report
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 3 {
		t.Fatalf("status: %v exit %d (want 3)\n%s%s", err, code, out, stderr)
	}
	cmTotal, _, cmByKeyID := etcdTruthAt(t, cp, "/registry/configmaps/")
	if st.Rotation.Stage != "migrating" || st.Stale != r.Stale+cmTotal-cmByKeyID[keyID2] || st.Encrypted || len(st.Scan.Resources) != 2 {
		t.Fatalf("status stage %q stale %d encrypted %v resources %d", st.Rotation.Stage, st.Stale, st.Encrypted, len(st.Scan.Resources))
	}
	if len(st.EncryptionConfig) != 2 || fmt.Sprint(st.EncryptionConfig[0].Providers) != "[kms:v2:"+provider+" identity]" {
		t.Fatalf("status provider order %+v", st.EncryptionConfig)
	}

	// The auditor publishes the same findings as EncryptionStatus, with
	// only the RBAC the chart gives it.
	startAuditor(t, cp, "--etcd-endpoints="+cp.EtcdURL, "--kms-socket=unix://"+p.Socket, "--scan-interval=5s")
	es := waitEncryptionStatus(t, cp, func(es *v1alpha1.EncryptionStatus) bool { return es.Status.Total == total })
	if es.Status.Stale != r.Stale || es.Status.Plaintext != 5 || es.Status.CurrentKeyID != keyID2 ||
		!cond(es, v1alpha1.ConditionEncrypted, metav1.ConditionFalse, v1alpha1.ReasonPlaintextFound) ||
		!cond(es, v1alpha1.ConditionKeyCurrent, metav1.ConditionFalse, v1alpha1.ReasonMigrating) || es.Status.RotationStage != "migrating" {
		t.Fatalf("EncryptionStatus before reencrypt: %+v", es.Status)
	}

	trim := func(extra ...string) (string, string, int) {
		return cli(t, append(append([]string{"trim", "--test-only-settle-time", testSettle.String()}, common...), extra...)...)
	}
	out, stderr, code = trim()
	if code != 4 || !strings.Contains(stderr, "reencrypt") {
		t.Fatalf("trim before reencrypt: exit %d\n%s%s", code, out, stderr)
	}

	// Migrate the Secrets only: the ConfigMaps still need version 1.
	out, stderr, code = cli(t, append([]string{"reencrypt", "--qps", "200", "--resources", "secrets"}, common...)...)
	if code != 0 {
		t.Fatalf("reencrypt exited %d\n%s%s", code, out, stderr)
	}
	total2, byProvider2, byKeyID2 := etcdTruth(t, cp)
	if total2 != total || byProvider2["kms:v2:"+provider] != total || byKeyID2[keyID2] != total {
		t.Fatalf("after reencrypt etcd holds %v %v of %d", byProvider2, byKeyID2, total)
	}
	list, err := cp.Client.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if want, ok := values[s.Name]; ok && string(s.Data["v"]) != want {
			t.Fatalf("secret %s changed by reencrypt", s.Name)
		}
	}
	if _, _, code := cli(t, append([]string{"verify"}, common...)...); code != 0 {
		t.Fatalf("verify of secrets after reencrypt exited %d", code)
	}
	out, stderr, code = trim()
	_, _, cmByKeyID = etcdTruthAt(t, cp, "/registry/configmaps/")
	if want := fmt.Sprintf("v1=%d", cmByKeyID[keyID1]); code != 4 || cmByKeyID[keyID1] < 4 || !strings.Contains(stderr, want) {
		t.Fatalf("trim with ConfigMaps still under version 1: exit %d, want 4 naming %s\n%s%s", code, want, out, stderr)
	}

	// reencrypt takes the ConfigMaps from the EncryptionConfiguration.
	out, stderr, code = cli(t, append([]string{"reencrypt", "--qps", "200", "--encryption-config", cp.EncryptionConfigPath}, common...)...)
	if code != 0 || !strings.Contains(out, "configmaps") {
		t.Fatalf("reencrypt --encryption-config exited %d\n%s%s", code, out, stderr)
	}
	es = waitEncryptionStatus(t, cp, func(es *v1alpha1.EncryptionStatus) bool { return es.Status.Stale == 0 })
	if es.Status.Current != total || !cond(es, v1alpha1.ConditionEncrypted, metav1.ConditionTrue, v1alpha1.ReasonEncryptionCompleted) ||
		!cond(es, v1alpha1.ConditionKeyCurrent, metav1.ConditionTrue, v1alpha1.ReasonEncryptionCompleted) {
		t.Fatalf("EncryptionStatus after reencrypt: %+v", es.Status)
	}
	// The STALE column of `kubectl get encryptionstatus` reads
	// .status.stale: it must be stored as 0, not left out.
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dyn.Resource(v1alpha1.GroupVersion.WithResource("encryptionstatuses")).Get(ctx, "cluster", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, found, err := unstructured.NestedInt64(raw.Object, "status", "stale"); !found || err != nil || n != 0 {
		t.Fatalf("EncryptionStatus .status.stale = %d (found %v, %v), want a stored 0", n, found, err)
	}

	// Every other gate, each failing closed.
	deadPort, _ := harness.FreePort()
	for _, g := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"wrong prefix", []string{"--etcd-prefix", "/wrong"}, 4, "namespaces/default"},
		{"an API server that cannot be read", []string{"--apiserver-metrics-url", fmt.Sprintf("https://127.0.0.1:%d/metrics", deadPort)}, 4, "cannot read metrics"},
		{"settle time not reached", []string{"--test-only-settle-time", (time.Since(switched) + time.Hour).Round(time.Second).String()}, 4, "settle time"},
		{"no metrics", []string{"--no-apiserver-metrics"}, 2, "never skips"},
	} {
		out, stderr, code := trim(g.args...)
		if code != g.code || !strings.Contains(stderr, g.want) {
			t.Fatalf("trim with %s: exit %d, want a refusal naming %q\n%s%s", g.name, code, g.want, out, stderr)
		}
	}
	if got := v.Read(mount + "/keys/" + key).Data["min_decryption_version"]; fmt.Sprint(got) != "1" {
		t.Fatalf("a refused trim changed min_decryption_version to %v", got)
	}

	// Values trim cannot read, under the prefix: a KMS v1 value and a KMS
	// v2 value whose key_id is another plugin's. Either could need any
	// version, so trim refuses and names them.
	unreadable := map[string]string{
		"/registry/secrets/default/kms-v1-left-over": "k8s:enc:kms:v1:old-plugin:\x00\x20wrapped-dek-and-data",
		"/registry/configmaps/default/foreign-key":   storedKMS("projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"),
	}
	for k, val := range unreadable {
		if _, err := cp.Etcd().Put(ctx, k, val); err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, code = trim()
	if code != 4 || !strings.Contains(stderr, "/registry/secrets/default/kms-v1-left-over") || !strings.Contains(stderr, "/registry/configmaps/default/foreign-key") {
		t.Fatalf("trim with a KMS v1 value and a foreign key_id under the prefix: exit %d, want 4 listing both\n%s%s", code, out, stderr)
	}
	for k := range unreadable {
		if _, err := cp.Etcd().Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}

	out, stderr, code = trim()
	if code != 0 || !strings.Contains(out, "min_decryption_version=1") || !strings.Contains(out, "backups") {
		t.Fatalf("trim after reencrypt exited %d (want 0, with the undo command and the backup warning)\n%s%s", code, out, stderr)
	}
	if got := v.Read(mount + "/keys/" + key).Data["min_decryption_version"]; fmt.Sprint(got) != "2" {
		t.Fatalf("min_decryption_version %v after trim, want 2", got)
	}
	out, _, code = cli(t, append([]string{"status", "-o", "json"}, common...)...)
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Rotation.Stage != "current" || code != 0 {
		t.Fatalf("status after trim: exit %d %v %s", code, err, out)
	}
	// A wrong prefix is no evidence for status either.
	if out, stderr, code := cli(t, append([]string{"status", "--etcd-prefix", "/wrong"}, common...)...); code != 4 {
		t.Fatalf("status with a wrong prefix exited %d, want 4\n%s%s", code, out, stderr)
	}

	// The proof that the trim stranded nothing: the API server restarts
	// (no DEK seed cached, so every seed goes to Vault under the trimmed
	// key) and every object is read back by name from etcd.
	cp.RestartAPIServer()
	cms := map[string]map[string]string{}
	for i := range 4 {
		cms[fmt.Sprintf("cm-%d", i)] = map[string]string{"k": "v"}
	}
	readBackByName(t, cp.Client, values, cms)
}

func cond(es *v1alpha1.EncryptionStatus, typ string, status metav1.ConditionStatus, reason string) bool {
	c := meta.FindStatusCondition(es.Status.Conditions, typ)
	return c != nil && c.Status == status && c.Reason == reason
}

func waitEncryptionStatus(t *testing.T, cp *harness.ControlPlane, done func(*v1alpha1.EncryptionStatus) bool) *v1alpha1.EncryptionStatus {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var es v1alpha1.EncryptionStatus
		err := c.Get(context.Background(), client.ObjectKey{Name: "cluster"}, &es)
		if err == nil && done(&es) {
			return &es
		}
		if time.Now().After(deadline) {
			t.Fatalf("EncryptionStatus not as expected within 60s: %v %+v", err, es.Status)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// readBackByName gets each Secret and ConfigMap in default by name, with
// no resourceVersion (so from etcd, not the watch cache), and fails unless
// the Secret's "v" and the ConfigMap's data are as given.
func readBackByName(t *testing.T, k kubernetes.Interface, secrets map[string]string, configmaps map[string]map[string]string) {
	t.Helper()
	ctx := context.Background()
	for n, want := range secrets {
		s, err := k.CoreV1().Secrets("default").Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get secret %s after the trim and a restart: %v", n, err)
		}
		if string(s.Data["v"]) != want {
			t.Fatalf("secret %s changed", n)
		}
	}
	for n, want := range configmaps {
		cm, err := k.CoreV1().ConfigMaps("default").Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get configmap %s after the trim and a restart: %v", n, err)
		}
		if fmt.Sprint(cm.Data) != fmt.Sprint(want) {
			t.Fatalf("configmap %s changed", n)
		}
	}
}
