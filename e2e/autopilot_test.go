package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

// rotationPolicyHCL is the Vault policy docs/rotation.md gives the
// auditor's rotation identity: read the key, rotate it, configure it.
func rotationPolicyHCL(mount, key string) string {
	return fmt.Sprintf(`path "%[1]s/keys/%[2]s" { capabilities = ["read"] }
path "%[1]s/keys/%[2]s/rotate" { capabilities = ["update"] }
path "%[1]s/keys/%[2]s/config" { capabilities = ["update"] }
`, mount, key)
}

// autopilotRules is what the chart adds to the auditor's ClusterRole with
// auditor.rotation.enabled: its policies, re-encryption of the encrypted
// resources (here Secrets and ConfigMaps), and the API servers' metrics.
var autopilotRules = []rbacv1.PolicyRule{
	{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"rotationpolicies"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"rotationpolicies/status"}, Verbs: []string{"update"}},
	{APIGroups: []string{""}, Resources: []string{"secrets", "configmaps"}, Verbs: []string{"get", "list", "update"}},
	{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}},
}

// autopilotCluster is Vault, etcd, one or two API servers (each with its
// own plugin) with Secrets and ConfigMaps under KMS, and objects of both.
type autopilotCluster struct {
	v      *harness.Vault
	cp     *harness.ControlPlane
	second *harness.APIServer
	// secondConfig is the second API server's EncryptionConfiguration,
	// to start it again.
	secondConfig string
	plugin       *harness.Plugin
	keyID1       string
	kc           client.Client
	metrics      []string
}

func startAutopilotCluster(t *testing.T, two bool) *autopilotCluster {
	t.Helper()
	c := &autopilotCluster{v: harness.StartVault(t)}
	c.v.TransitKey(mount, key)
	c.plugin = harness.StartPlugin(t, c.v, harness.PluginOptions{Key: key, RefreshInterval: time.Second})
	c.keyID1 = c.plugin.WaitKeyID(t, 20*time.Second)
	c.cp = harness.StartControlPlane(t, harness.ControlPlaneOptions{EncryptionConfig: harness.KMSEncryptionConfig(provider, c.plugin.Socket, "secrets", "configmaps"),
		CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	c.metrics = []string{strings.TrimSuffix(c.cp.Config.Host, "/") + "/metrics"}
	clients := []kubernetes.Interface{c.cp.Client}
	if two {
		p2 := harness.StartPlugin(t, c.v, harness.PluginOptions{Key: key, RefreshInterval: time.Second})
		p2.WaitKeyID(t, 20*time.Second)
		c.secondConfig = harness.KMSEncryptionConfig(provider, p2.Socket, "secrets", "configmaps")
		c.second = c.cp.StartAPIServer(c.secondConfig)
		c.metrics = append(c.metrics, c.second.URL+"/metrics")
		k2, err := kubernetes.NewForConfig(c.second.Config)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, k2)
	}
	ctx := context.Background()
	// Objects written through each API server.
	for i, k := range clients {
		for j := range 3 {
			name := fmt.Sprintf("ap-%d-%d", i, j)
			if _, err := k.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"v": []byte(name)}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := k.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": name}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kc, err := client.New(c.cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	c.kc = kc
	return c
}

// testSettle is the settle time of the e2e tests, given to the auditor and
// the CLI through their test-only flags: real clusters wait at least 4m.
const testSettle = 5 * time.Second

// startRotationAuditor runs the auditor with --rotation as a user holding
// the auditor's rules and the autopilot's, and a Vault token holding hcl.
func (c *autopilotCluster) startRotationAuditor(t *testing.T, hcl string, extra ...string) *harness.Controller {
	t.Helper()
	ctx := context.Background()
	name := "vaultkms-auditor-rotation"
	rules := append(append([]rbacv1.PolicyRule{}, auditorRules...), autopilotRules...)
	if _, err := c.cp.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: name}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	user, err := c.cp.Env.ControlPlane.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kcfg, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "auditor.kubeconfig")
	if err := os.WriteFile(kubeconfig, kcfg, 0o600); err != nil {
		t.Fatal(err)
	}
	c.v.Policy("vaultkms-rotation", hcl)
	tok := c.v.Write("auth/token/create", map[string]any{"policies": []string{"vaultkms-rotation"}, "no_default_policy": false, "ttl": "1h"}).Auth.ClientToken
	args := append([]string{"--test-only-settle-time=" + testSettle.String(), "--etcd-endpoints=" + c.cp.EtcdURL, "--kms-socket=unix://" + c.plugin.Socket, "--scan-interval=5s",
		"--encryption-config=" + c.cp.EncryptionConfigPath, "--rotation", "--rotation-vault-addr=" + c.v.Addr,
		"--rotation-vault-ca-cert=" + c.v.CA.CertFile, "--rotation-token-file=" + harness.TokenFile(t, tok)}, extra...)
	a := harness.RunAuditor(t, kubeconfig, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("auditor log:\n%s", a.Log.String())
		}
	})
	return a
}

// policy leaves settleTime at its default: the auditor's
// --test-only-settle-time (testSettle) replaces it, since the CRD allows
// nothing below kube-apiserver's 4m.
func (c *autopilotCluster) policy(name string, every, trimAfter, timeout time.Duration) *v1alpha1.RotationPolicy {
	return &v1alpha1.RotationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.RotationPolicySpec{Transit: v1alpha1.TransitKeyRef{Mount: mount, Key: key}, RotateEvery: metav1.Duration{Duration: every},
			TrimAfter: &metav1.Duration{Duration: trimAfter}, Reencrypt: v1alpha1.ReencryptPacing{QPS: 50},
			APIServers: v1alpha1.APIServerGate{Timeout: &metav1.Duration{Duration: timeout}, MetricsURLs: c.metrics}}}
}

// waitPolicy polls the policy until done says so, logging each new stage.
func (c *autopilotCluster) waitPolicy(t *testing.T, name string, within time.Duration, done func(*v1alpha1.RotationPolicy) bool) *v1alpha1.RotationPolicy {
	t.Helper()
	deadline := time.Now().Add(within)
	var last v1alpha1.RotationStage
	for {
		var p v1alpha1.RotationPolicy
		err := c.kc.Get(context.Background(), client.ObjectKey{Name: name}, &p)
		if err == nil && p.Status.Stage != last {
			last = p.Status.Stage
			t.Logf("RotationPolicy %s: stage %s", name, last)
		}
		if err == nil && done(&p) {
			return &p
		}
		if time.Now().After(deadline) {
			t.Fatalf("RotationPolicy %s not as expected within %s: %v %+v", name, within, err, p.Status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// transitKey returns the key's latest_version and min_decryption_version.
func (c *autopilotCluster) transitKey() (latest, minDec string) {
	d := c.v.Read(mount + "/keys/" + key).Data
	return fmt.Sprint(d["latest_version"]), fmt.Sprint(d["min_decryption_version"])
}

// eventReasons lists the reasons of the events about the policy, oldest
// first.
func (c *autopilotCluster) eventReasons(t *testing.T, name string) []string {
	t.Helper()
	list, err := c.cp.Client.EventsV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "RotationPolicy" && e.Regarding.Name == name {
			out = append(out, e.Type+"/"+e.Reason)
		}
	}
	return out
}

func (c *autopilotCluster) waitEvent(t *testing.T, name, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := c.eventReasons(t, name)
		for _, r := range got {
			if r == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event about RotationPolicy %s; events: %v", want, name, got)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func stopped(reason string) func(*v1alpha1.RotationPolicy) bool {
	return func(p *v1alpha1.RotationPolicy) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionStopped)
		return p.Status.Stage == v1alpha1.StageStopped && c != nil && c.Status == metav1.ConditionTrue && c.Reason == reason
	}
}

// TestAutopilotFullCycle: a RotationPolicy on a cluster of two API servers
// (sharing etcd, each with its own plugin) with Secrets and ConfigMaps under
// KMS. The auditor rotates with its own narrowly scoped Vault identity,
// waits for both API servers, re-encrypts, verifies, trims, and every
// object stays readable through both API servers.
func TestAutopilotFullCycle(t *testing.T) {
	t.Parallel()
	c := startAutopilotCluster(t, true)
	c.startRotationAuditor(t, rotationPolicyHCL(mount, key))
	ctx := context.Background()
	// Due 10s after the key's creation; trim 10s after verification.
	// The mount spelled with a trailing slash: the API-server check must
	// still match the key_id the plugin reports ("transit").
	auto := c.policy("auto", 10*time.Second, 10*time.Second, 150*time.Second)
	auto.Spec.Transit.Mount = mount + "/"
	if err := c.kc.Create(ctx, auto); err != nil {
		t.Fatal(err)
	}
	c.waitPolicy(t, "auto", 150*time.Second, func(p *v1alpha1.RotationPolicy) bool {
		switch p.Status.Stage {
		case v1alpha1.StageWaitingForAPIServers, v1alpha1.StageReencrypting, v1alpha1.StageVerifying, v1alpha1.StageWaitingToTrim:
			return true
		}
		return false
	})
	// Lengthen the period once rotated, as an operator would, so no second
	// cycle starts while the first one is checked.
	for {
		var p v1alpha1.RotationPolicy
		if err := c.kc.Get(ctx, client.ObjectKey{Name: "auto"}, &p); err != nil {
			t.Fatal(err)
		}
		p.Spec.RotateEvery = metav1.Duration{Duration: time.Hour}
		err := c.kc.Update(ctx, &p)
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	p := c.waitPolicy(t, "auto", 150*time.Second, func(p *v1alpha1.RotationPolicy) bool { return p.Status.Stage == v1alpha1.StageDone })
	if latest, minDec := c.transitKey(); latest != "2" || minDec != "2" {
		t.Fatalf("after the cycle the key has latest_version %s, min_decryption_version %s; want 2 and 2", latest, minDec)
	}
	if p.Status.TargetVersion != 2 || p.Status.MinDecryptionVersion != 2 || p.Status.LastTrimTime == nil || p.Status.VerifiedTime == nil ||
		p.Status.LastTrimTime.Sub(p.Status.VerifiedTime.Time) < 10*time.Second || p.Status.Reencrypted < 12 {
		t.Fatalf("status after the cycle: %+v", p.Status)
	}
	if r := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue || r.ObservedGeneration != p.Generation {
		t.Fatalf("Ready after the cycle: %+v", r)
	}
	// Every object of both resources is under version 2 in etcd.
	for _, prefix := range []string{"/registry/secrets/", "/registry/configmaps/"} {
		_, _, byKeyID := etcdTruthAt(t, c.cp, prefix)
		for id, n := range byKeyID {
			if id == c.keyID1 {
				t.Fatalf("%d values under %s still under version 1 after the cycle: %v", n, prefix, byKeyID)
			}
		}
	}
	// The proof that the trim stranded nothing: the second API server
	// restarts (its DEK cache empty, so each seed is decrypted by Vault
	// again under the trimmed key), then every Secret and ConfigMap is read
	// by name through both, from etcd, with its data unchanged. (The first,
	// envtest's, timed out stopping here while the auditor watched it.)
	c.second.Stop()
	c.second = c.cp.StartAPIServer(c.secondConfig)
	secrets, cms := map[string]string{}, map[string]map[string]string{}
	for i := range 2 {
		for j := range 3 {
			n := fmt.Sprintf("ap-%d-%d", i, j)
			secrets[n], cms[n] = n, map[string]string{"v": n}
		}
	}
	for _, cfg := range []*rest.Config{c.cp.Config, c.second.Config} {
		k, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		readBackByName(t, k, secrets, cms)
	}
	// An event at each stage.
	for _, want := range []string{"Rotating", "Rotated", "WaitingForAPIServers", "Reencrypting", "Verifying", "WaitingToTrim", "Trimming", "Trimmed", "Done"} {
		c.waitEvent(t, "auto", "Normal/"+want)
	}
	if got := strings.Join(c.eventReasons(t, "auto"), ","); strings.Contains(got, "Warning/") {
		t.Fatalf("warnings during a clean cycle: %s", got)
	}
}

// TestAutopilotAPIServerGate: one of two API servers stopped, so it never
// reports the new key_id: the cycle stops at the API server gate naming it,
// and nothing is trimmed.
func TestAutopilotAPIServerGate(t *testing.T) {
	t.Parallel()
	c := startAutopilotCluster(t, true)
	c.second.Stop()
	c.startRotationAuditor(t, rotationPolicyHCL(mount, key))
	if err := c.kc.Create(context.Background(), c.policy("gate", 10*time.Second, 0, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	p := c.waitPolicy(t, "gate", 120*time.Second, stopped(v1alpha1.ReasonGateAPIServers))
	msg := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionStopped).Message
	if p.Status.StoppedStage != v1alpha1.StageWaitingForAPIServers || !strings.Contains(msg, c.second.URL+"/metrics: cannot read metrics") || !strings.Contains(msg, "resume") {
		t.Fatalf("stopped at %s: %s", p.Status.StoppedStage, msg)
	}
	c.waitEvent(t, "gate", "Warning/"+v1alpha1.ReasonGateAPIServers)
	if latest, minDec := c.transitKey(); latest != "2" || minDec != "1" {
		t.Fatalf("key after the stop: latest %s, min_decryption_version %s; want 2 and 1", latest, minDec)
	}
}

// TestAutopilotStaleObject: a value under version 1 in a resource the
// auditor does not re-encrypt (written straight into etcd, as an object
// re-encryption could not fix) keeps the whole-prefix verification from
// passing: the cycle stops before trim.
func TestAutopilotStaleObject(t *testing.T) {
	t.Parallel()
	c := startAutopilotCluster(t, false)
	if _, err := c.cp.Etcd().Put(context.Background(), "/registry/autopilot.example.com/widgets/default/stuck", storedKMS(c.keyID1)); err != nil {
		t.Fatal(err)
	}
	c.startRotationAuditor(t, rotationPolicyHCL(mount, key))
	if err := c.kc.Create(context.Background(), c.policy("stale", 10*time.Second, 0, 120*time.Second)); err != nil {
		t.Fatal(err)
	}
	p := c.waitPolicy(t, "stale", 180*time.Second, stopped(v1alpha1.ReasonGateStaleRemain))
	msg := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionStopped).Message
	if p.Status.StoppedStage != v1alpha1.StageVerifying || !strings.Contains(msg, "v1=1") {
		t.Fatalf("stopped at %s: %s", p.Status.StoppedStage, msg)
	}
	c.waitEvent(t, "stale", "Warning/"+v1alpha1.ReasonGateStaleRemain)
	if latest, minDec := c.transitKey(); latest != "2" || minDec != "1" {
		t.Fatalf("key after the stop: latest %s, min_decryption_version %s; want 2 and 1", latest, minDec)
	}
	// Everything the API server stores was re-encrypted; only the stuck
	// value is left under version 1.
	for _, prefix := range []string{"/registry/secrets/", "/registry/configmaps/"} {
		if _, _, byKeyID := etcdTruthAt(t, c.cp, prefix); byKeyID[c.keyID1] != 0 {
			t.Fatalf("%s: %v", prefix, byKeyID)
		}
	}
	sv, err := storedvalue.Classify(c.cp.RawGet("/registry/autopilot.example.com/widgets/default/stuck"))
	if err != nil || sv.KeyID != c.keyID1 {
		t.Fatalf("stuck value %v %v", sv, err)
	}
}

// TestAutopilotNoEvidence: an auditor pointed at the wrong etcd prefix
// finds nothing, which proves nothing: the cycle stops before rotating.
func TestAutopilotNoEvidence(t *testing.T) {
	t.Parallel()
	c := startAutopilotCluster(t, false)
	c.startRotationAuditor(t, rotationPolicyHCL(mount, key), "--etcd-prefix=/wrong")
	// The CRD refuses a settle time below kube-apiserver's rules, naming
	// the field.
	short := c.policy("short", 10*time.Second, 0, 60*time.Second)
	short.Spec.APIServers.SettleTime = &metav1.Duration{Duration: 3*time.Minute + 59*time.Second}
	if err := c.kc.Create(context.Background(), short); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "apiServers.settleTime must be a duration between 4m and 24h") {
		t.Fatalf("create with settleTime 3m59s: %v, want Invalid naming apiServers.settleTime and its 4m minimum", err)
	}
	if err := c.kc.Create(context.Background(), c.policy("prefix", 10*time.Second, 0, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	p := c.waitPolicy(t, "prefix", 60*time.Second, stopped(v1alpha1.ReasonGatePrefix))
	msg := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionStopped).Message
	if p.Status.StoppedStage != v1alpha1.StageIdle || !strings.Contains(msg, "/wrong/namespaces/default") {
		t.Fatalf("stopped at %s: %s", p.Status.StoppedStage, msg)
	}
	c.waitEvent(t, "prefix", "Warning/"+v1alpha1.ReasonGatePrefix)
	if latest, minDec := c.transitKey(); latest != "1" || minDec != "1" {
		t.Fatalf("key after the stop: latest %s, min_decryption_version %s; want 1 and 1 (no rotation)", latest, minDec)
	}
}

// TestAutopilotVaultRefusesRotate: a rotation identity without update on
// <mount>/keys/<key>/rotate: the cycle stops at Rotating, naming the path
// to grant; after the operator grants it and resumes, the cycle goes on.
func TestAutopilotVaultRefusesRotate(t *testing.T) {
	t.Parallel()
	c := startAutopilotCluster(t, false)
	noRotate := fmt.Sprintf(`path "%[1]s/keys/%[2]s" { capabilities = ["read"] }
path "%[1]s/keys/%[2]s/config" { capabilities = ["update"] }
`, mount, key)
	c.startRotationAuditor(t, noRotate)
	ctx := context.Background()
	if err := c.kc.Create(ctx, c.policy("refused", 10*time.Second, 0, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	p := c.waitPolicy(t, "refused", 60*time.Second, stopped(v1alpha1.ReasonGateVaultRotate))
	msg := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionStopped).Message
	if p.Status.StoppedStage != v1alpha1.StageRotating || !strings.Contains(msg, mount+"/keys/"+key+"/rotate") {
		t.Fatalf("stopped at %s: %s", p.Status.StoppedStage, msg)
	}
	c.waitEvent(t, "refused", "Warning/"+v1alpha1.ReasonGateVaultRotate)
	if latest, minDec := c.transitKey(); latest != "1" || minDec != "1" {
		t.Fatalf("key after the stop: latest %s, min_decryption_version %s; want 1 and 1", latest, minDec)
	}
	// Stopped stays stopped until the operator acts.
	time.Sleep(3 * time.Second)
	if latest, _ := c.transitKey(); latest != "1" {
		t.Fatal("a stopped policy rotated")
	}
	// Grant rotate and resume with the annotation: it rotates once.
	c.v.Policy("vaultkms-rotation", rotationPolicyHCL(mount, key))
	if err := c.kc.Get(ctx, client.ObjectKey{Name: "refused"}, p); err != nil {
		t.Fatal(err)
	}
	p.Annotations = map[string]string{v1alpha1.ResumeAnnotation: "1"}
	if err := c.kc.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	c.waitPolicy(t, "refused", 60*time.Second, func(p *v1alpha1.RotationPolicy) bool {
		switch p.Status.Stage {
		case v1alpha1.StageIdle, v1alpha1.StageRotating, v1alpha1.StageStopped:
			return false
		}
		return p.Status.ResumedWith == "1"
	})
	c.waitEvent(t, "refused", "Normal/"+v1alpha1.ReasonResumed)
	if latest, _ := c.transitKey(); latest != "2" {
		t.Fatalf("after the resume latest_version %s, want 2", latest)
	}
}
