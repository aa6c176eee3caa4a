package ha

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

const (
	releaseNS  = "vaultkms-system"
	tenantNS   = "ha-app"
	pkiRole    = "ha"
	leaseName  = "vaultkms-controller.secrets.vaultkms.io"
	vsCount    = 6
	vsTTL      = 72 * time.Second
	controller = "controller-"
)

var vaultSecrets = schema.GroupVersionResource{Group: "secrets.vaultkms.io", Version: "v1alpha1", Resource: "vaultsecrets"}

// controllerLeaderStopped installs the chart into apiserver-a with two
// controller replicas, runs them as containers with exactly the rendered
// Deployment's args, env and Secret volumes and a token of the rendered
// ServiceAccount, and stops the leader (docker stop) while VaultSecrets
// are being refreshed.
//
// Each VaultSecret issues a certificate from a PKI role with
// generate_lease=true, so every issuance is also a Vault lease, and each
// VaultSecret has its own common name, so Vault's certificate store says
// how many certificates were issued for it. A refresh is a new certificate
// appearing in the VaultSecret's Secret; the test watches every Secret
// four times a second. "Issued twice" means Vault issued a certificate
// for a VaultSecret that never became that Secret's content: a second
// issuance for the same refresh (two replicas at once, or the new leader
// redoing what the stopped one had issued). The test asserts there is
// none: issued == installed for every VaultSecret.
func controllerLeaderStopped(t *testing.T, c *cluster) {
	began := time.Now()
	root := moduleRoot(t)
	bin := goBuild(t, root, "./cmd/vaultkms-controller", t.TempDir())
	image := c.d.image(t, "vaultkms-controller", filepath.Join(root, "e2e", "ha", "images", "vaultkms.Dockerfile"), bin)
	ctx := context.Background()
	api := c.apis[0]
	vc := c.vaultClient(t, c.activeVault(t), c.rootToken)

	// Vault: a PKI whose every certificate carries a lease, and kubernetes
	// auth against apiserver-a as the Vault containers reach it.
	if err := vc.Sys().Mount("pki", &vaultapi.MountInput{Type: "pki", Config: vaultapi.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		t.Fatalf("mount pki: %v", err)
	}
	mustWrite(t, vc, "pki/root/generate/internal", map[string]any{"common_name": "ha root", "ttl": "87600h"})
	// not_before_duration is kept short: the controller re-issues at two
	// thirds of notAfter-notBefore, and Vault's default 30 s backdating
	// would make a 60 s certificate due at once.
	mustWrite(t, vc, "pki/roles/"+pkiRole, map[string]any{"allow_any_name": true, "generate_lease": true,
		"not_before_duration": "1s", "max_ttl": "1h"})
	if err := vc.Sys().PutPolicy("ha-pki", `path "pki/issue/`+pkiRole+`" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{releaseNS, tenantNS, "vault-auth"} {
		if _, err := api.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
	}
	for ns, sa := range map[string]string{tenantNS: "app", "vault-auth": "token-reviewer"} {
		if _, err := api.client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("service account %s/%s: %v", ns, sa, err)
		}
	}
	if _, err := api.client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-token-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "token-reviewer", Namespace: "vault-auth"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := vc.Sys().EnableAuthWithOptions("kubernetes", &vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatalf("enable kubernetes auth: %v", err)
	}
	mustWrite(t, vc, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":    "https://" + api.name + ":6443",
		"kubernetes_ca_cert": string(c.ca.certPEM),
		"token_reviewer_jwt": saToken(t, api, "vault-auth", "token-reviewer", 24*time.Hour),
	})
	mustWrite(t, vc, "auth/kubernetes/role/ha-app", map[string]any{
		"bound_service_account_names": "app", "bound_service_account_namespaces": tenantNS,
		"token_policies": "ha-pki", "token_ttl": "1h", "audience": "vault",
	})

	// The chart, installed with helm into apiserver-a.
	if _, err := api.client.CoreV1().Secrets(releaseNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "vault-ca"},
		Data: map[string][]byte{"ca.crt": c.ca.certPEM}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(c.dir, "kubeconfig")
	if _, err := harness.Helm(t, kubeconfig, "upgrade", "--install", "vaultkms", harness.ChartPath(t), "--namespace", releaseNS, "--timeout", "2m",
		"--set", "vault.addr="+strings.ReplaceAll(c.vaultAddrs(), ",", `\,`), "--set", "vault.caCertSecret=vault-ca", "--set", "controller.replicas=2"); err != nil {
		t.Fatal(err)
	}
	manifest, err := harness.Helm(t, kubeconfig, "get", "manifest", "vaultkms", "--namespace", releaseNS)
	if err != nil {
		t.Fatal(err)
	}
	dep := renderedDeployment(t, manifest, "vaultkms-controller")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Fatalf("rendered replicas %v, want 2", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	ctr := pod.Containers[0]
	if !containsArg(ctr.Args, "--leader-elect=true") {
		t.Fatalf("rendered args %v do not elect a leader", ctr.Args)
	}

	// Two replicas, one talking to each API server, as pods spread over
	// nodes would reach them through the kubernetes Service.
	files := map[string][]byte{}
	var tmpfs []string
	for _, m := range ctr.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.EmptyDir != nil {
				// Scratch space (the connections' CA files), as the
				// kubelet would give it: in memory.
				tmpfs = append(tmpfs, m.MountPath)
				continue
			}
			if v.Secret == nil {
				t.Fatalf("rendered volume %s is neither a Secret nor an emptyDir", v.Name)
			}
			s, err := api.client.CoreV1().Secrets(releaseNS).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("Secret %s of volume %s: %v", v.Secret.SecretName, v.Name, err)
			}
			for k, val := range s.Data {
				files[m.MountPath+"/"+k] = val
			}
		}
	}
	env := map[string]string{"KUBECONFIG": "/etc/vaultkms/kube/kubeconfig"}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = releaseNS
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		default:
			t.Fatalf("rendered env %s: the test cannot resolve it", e.Name)
		}
	}
	boxes := map[string]*box{}
	for i, a := range c.apis {
		f := map[string][]byte{"/etc/vaultkms/kube/kubeconfig": tokenKubeconfig(a.name, c.ca.certPEM,
			saToken(t, api, releaseNS, pod.ServiceAccountName, time.Hour))}
		for k, v := range files {
			f[k] = v
		}
		name := fmt.Sprintf("%s%d", controller, i)
		boxes[name] = c.d.start(t, c.network, spec{alias: name, image: image, cmd: ctr.Args, env: env, files: f, tmpfs: tmpfs})
	}

	// The VaultSecrets.
	dyn, err := dynamic.NewForConfig(api.rest)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, vsCount)
	for i := range names {
		names[i] = fmt.Sprintf("cert-%d", i)
		vs := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "secrets.vaultkms.io/v1alpha1", "kind": "VaultSecret",
			"metadata": map[string]any{"name": names[i], "namespace": tenantNS},
			"spec": map[string]any{
				"auth":   map[string]any{"kubernetes": map[string]any{"role": "ha-app", "serviceAccountName": "app"}},
				"source": map[string]any{"pki": map[string]any{"mount": "pki", "role": pkiRole, "commonName": commonName(names[i])}},
				"ttl":    fmt.Sprintf("%ds", int(vsTTL/time.Second)),
			},
		}}
		if _, err := dyn.Resource(vaultSecrets).Namespace(tenantNS).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create VaultSecret %s: %v", names[i], err)
		}
	}
	created := time.Now()

	w := watchSecrets(t, c, names)
	defer w.stop()
	leader := waitLeader(t, api, "", 90*time.Second)
	t.Logf("leader: %s (of %s%d, %s%d); controller ready and leading %s after the chart was installed",
		leader, controller, 0, controller, 1, time.Since(began).Round(100*time.Millisecond))
	if !w.waitFor(func(s map[string][]installed) bool {
		for _, n := range names {
			if len(s[n]) < 1 {
				return false
			}
		}
		return true
	}, 60*time.Second) {
		t.Fatalf("not every VaultSecret got its first certificate within 60s: %v", w.counts())
	}
	t.Logf("first certificates of %d VaultSecrets installed %s after they were created", vsCount, time.Since(created).Round(100*time.Millisecond))

	// Stop the leader mid-sync: just after the first re-issue of the
	// refresh wave, while the others are coming due.
	if !w.waitFor(func(s map[string][]installed) bool {
		for _, n := range names {
			if len(s[n]) >= 2 {
				return true
			}
		}
		return false
	}, vsTTL) {
		t.Fatalf("no VaultSecret was refreshed within %s: %v", vsTTL, w.counts())
	}
	before := w.counts()
	stopped := time.Now()
	boxes[leader].stop(t, 10*time.Second)
	t.Logf("leader %s stopped (docker stop, SIGTERM) %s after the VaultSecrets were created, in the refresh wave; refreshes so far %v; stop took %s",
		leader, stopped.Sub(created).Round(100*time.Millisecond), before, time.Since(stopped).Round(100*time.Millisecond))
	next := waitLeader(t, api, leader, 2*time.Minute)
	took := time.Since(stopped)
	_, dur := leaseInfo(t, api)
	t.Logf("%s took over %s after the stop (Lease duration %ds)", next, took.Round(100*time.Millisecond), dur)

	// Every VaultSecret refreshes at least once after the stop.
	if !w.waitFor(func(s map[string][]installed) bool {
		for _, n := range names {
			l := s[n]
			if len(l) == 0 || !l[len(l)-1].seen.After(stopped) {
				return false
			}
		}
		return true
	}, vsTTL+30*time.Second) {
		t.Fatalf("not every VaultSecret was refreshed after the leader stopped: %v", w.lastSeen())
	}
	// Issued (Vault's certificate store, by common name) against
	// installed (distinct certificates seen in each Secret). A certificate
	// issued just before the listing may not be in its Secret yet: the
	// watcher gets a few seconds to see it before it counts as never
	// installed.
	issued := issuedByCN(t, vc)
	leases := listLeases(t, vc, "pki/issue/"+pkiRole+"/")
	w.waitFor(func(s map[string][]installed) bool {
		for _, n := range names {
			for _, serial := range issued[commonName(n)] {
				if !seenSerial(s[n], serial) {
					return false
				}
			}
		}
		return true
	}, 5*time.Second)
	w.stop()
	snap := w.snapshot()
	var totalIssued, totalInstalled, lapses int
	var closest time.Duration = -1
	for _, n := range names {
		inst := snap[n]
		seen := map[string]bool{}
		var gaps []string
		for i, x := range inst {
			seen[x.serial] = true
			if i > 0 {
				gaps = append(gaps, x.seen.Sub(inst[i-1].seen).Round(100*time.Millisecond).String())
			}
		}
		iss := issued[commonName(n)]
		totalIssued += len(iss)
		totalInstalled += len(inst)
		var twice []string
		for _, s := range iss {
			if !seen[s] {
				twice = append(twice, s)
			}
		}
		for s := range seen {
			if !contains(iss, s) {
				t.Errorf("%s: Secret held certificate %s that Vault's store does not list for %s", n, s, commonName(n))
			}
		}
		st := status(t, dyn, n)
		t.Logf("%s: certificates issued %d, installed %d (refreshes %d), intervals between refreshes %v; status lastSyncTime %s refreshAt %s",
			n, len(iss), len(inst), len(inst)-1, gaps, st.lastSync.Format(time.RFC3339), st.refreshAt.Format(time.RFC3339))
		if len(twice) > 0 {
			t.Errorf("%s: %d certificate(s) issued but never installed (issued twice for one refresh): %v", n, len(twice), twice)
		}
		// Status must not be behind the Secret: a pass of the stopped
		// leader may have written a certificate as it stopped, and its
		// status write (or the new leader, from the Secret's write record)
		// records the read behind it, which may predate the stop.
		if read := writeRecordRead(t, api.client, n); st.lastSync.Before(read) {
			t.Errorf("%s: status lastSyncTime %s is behind the read of the certificate its Secret holds (%s, per its write record)", n, st.lastSync, read)
		}
		lapses += w.lapses[n]
		if closest < 0 || w.minLeft[n] < closest {
			closest = w.minLeft[n]
		}
	}
	t.Logf("totals: %d VaultSecrets, %d certificates issued, %d installed, %d issued twice; live Vault leases under pki/issue/%s: %d; least remaining life of a served certificate %s; observations of an expired or missing Secret %d",
		vsCount, totalIssued, totalInstalled, totalIssued-totalInstalled, pkiRole, len(leases), closest.Round(100*time.Millisecond), lapses)
	if lapses > 0 {
		t.Errorf("a Secret was missing or held an expired certificate %d times", lapses)
	}
	// Vault revokes a lease when it expires, within about a second of the
	// certificate's notAfter; certificates that close to expiring count
	// either way.
	sure, maybe := liveCerts(issued, w.notAfter, time.Now(), 3*time.Second)
	if len(leases) < sure || len(leases) > maybe {
		t.Errorf("%d live leases under pki/issue/%s, but %d to %d unexpired certificates: a certificate without exactly one lease", len(leases), pkiRole, sure, maybe)
	}
	if logs := boxes[next].logs(ctx, 400); strings.Contains(logs, "forbidden") {
		t.Errorf("the controller was refused something its chart RBAC should allow:\n%s", logs)
	}
	t.Logf("scenario took %s", time.Since(began).Round(time.Second))
}

func mustWrite(t *testing.T, vc *vaultapi.Client, path string, body map[string]any) *vaultapi.Secret {
	t.Helper()
	s, err := vc.Logical().Write(path, body)
	if err != nil {
		t.Fatalf("vault write %s: %v", path, err)
	}
	return s
}

func commonName(vs string) string { return vs + "." + tenantNS + ".svc" }

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

func seenSerial(l []installed, serial string) bool {
	for _, x := range l {
		if x.serial == serial {
			return true
		}
	}
	return false
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// saToken is a TokenRequest token of the service account: the identity a
// pod of it would hold.
func saToken(t *testing.T, a *apiServer, ns, sa string, ttl time.Duration) string {
	t.Helper()
	secs := int64(ttl / time.Second)
	tr, err := a.client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

func tokenKubeconfig(server string, ca []byte, token string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: ha
  cluster: {server: "https://%s:6443", certificate-authority-data: %s}
users:
- name: controller
  user: {token: %q}
contexts:
- name: ha
  context: {cluster: ha, user: controller}
current-context: ha
`, server, base64.StdEncoding.EncodeToString(ca), token))
}

func renderedDeployment(t *testing.T, manifest, name string) *appsv1.Deployment {
	t.Helper()
	for _, doc := range strings.Split(manifest, "\n---") {
		var probe struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &probe); err != nil {
			t.Fatalf("rendered manifest: %v", err)
		}
		if probe.Kind != "Deployment" || probe.Metadata.Name != name {
			continue
		}
		var d appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(doc), &d); err != nil {
			t.Fatalf("rendered Deployment: %v", err)
		}
		return &d
	}
	t.Fatalf("the chart rendered no Deployment %s", name)
	return nil
}

func leaseInfo(t *testing.T, a *apiServer) (holder string, duration int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := a.client.CoordinationV1().Leases(releaseNS).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return "", 0
	}
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseDurationSeconds != nil {
		duration = *l.Spec.LeaseDurationSeconds
	}
	return holder, duration
}

// waitLeader waits for a Lease holder other than not, and returns its
// container name (the holder identity starts with the pod's hostname).
func waitLeader(t *testing.T, a *apiServer, not string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h, _ := leaseInfo(t, a)
		host, _, _ := strings.Cut(h, "_")
		if strings.HasPrefix(host, controller) && host != not {
			return host
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Lease holder other than %q within %s (holder %q)", not, timeout, h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeRecordRead is when the data the Secret holds was read from Vault,
// as the controller's write record on it says.
func writeRecordRead(t *testing.T, c kubernetes.Interface, name string) time.Time {
	t.Helper()
	s, err := c.CoreV1().Secrets(tenantNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Secret %s: %v", name, err)
	}
	parts := strings.SplitN(s.Annotations["secrets.vaultkms.io/write-record"], ";", 4)
	var rec struct {
		Read int64 `json:"t"`
	}
	if len(parts) != 4 || json.Unmarshal([]byte(parts[3]), &rec) != nil || rec.Read == 0 {
		t.Fatalf("Secret %s has no write record: %q", name, s.Annotations["secrets.vaultkms.io/write-record"])
	}
	return time.Unix(rec.Read, 0)
}

type vsStatus struct{ lastSync, refreshAt time.Time }

func status(t *testing.T, dyn dynamic.Interface, name string) vsStatus {
	t.Helper()
	o, err := dyn.Resource(vaultSecrets).Namespace(tenantNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get VaultSecret %s: %v", name, err)
	}
	var st vsStatus
	for field, dst := range map[string]*time.Time{"lastSyncTime": &st.lastSync, "refreshAt": &st.refreshAt} {
		s, _, _ := unstructured.NestedString(o.Object, "status", field)
		*dst, _ = time.Parse(time.RFC3339, s)
	}
	return st
}

// issuedByCN lists Vault's certificate store and groups the serials by
// common name.
func issuedByCN(t *testing.T, vc *vaultapi.Client) map[string][]string {
	t.Helper()
	l, err := vc.Logical().List("pki/certs")
	if err != nil || l == nil {
		t.Fatalf("list pki/certs: %v", err)
	}
	keys, _ := l.Data["keys"].([]any)
	out := map[string][]string{}
	for _, k := range keys {
		serial := fmt.Sprint(k)
		s, err := vc.Logical().Read("pki/cert/" + serial)
		if err != nil || s == nil {
			t.Fatalf("read pki/cert/%s: %v", serial, err)
		}
		crt, err := parseCert([]byte(fmt.Sprint(s.Data["certificate"])))
		if err != nil {
			t.Fatalf("pki/cert/%s: %v", serial, err)
		}
		out[crt.Subject.CommonName] = append(out[crt.Subject.CommonName], serialOf(crt))
	}
	return out
}

func listLeases(t *testing.T, vc *vaultapi.Client, prefix string) []string {
	t.Helper()
	l, err := vc.Logical().List("sys/leases/lookup/" + prefix)
	if err != nil {
		t.Fatalf("list leases under %s: %v", prefix, err)
	}
	var out []string
	if l != nil {
		keys, _ := l.Data["keys"].([]any)
		for _, k := range keys {
			out = append(out, fmt.Sprint(k))
		}
	}
	return out
}

// liveCerts counts the installed certificates (notAfter as the watcher
// saw it) that are surely still valid at now (more than slack ahead) and
// those that may be (not more than slack behind).
func liveCerts(issued map[string][]string, notAfter map[string]time.Time, now time.Time, slack time.Duration) (sure, maybe int) {
	for _, serials := range issued {
		for _, s := range serials {
			na, ok := notAfter[s]
			if !ok {
				continue
			}
			if na.After(now.Add(slack)) {
				sure++
			}
			if na.After(now.Add(-slack)) {
				maybe++
			}
		}
	}
	return sure, maybe
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// serialOf formats a serial as Vault's store names it (hex pairs, colons).
func serialOf(c *x509.Certificate) string {
	h := fmt.Sprintf("%x", c.SerialNumber)
	if len(h)%2 == 1 {
		h = "0" + h
	}
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// installed is one certificate seen in a Secret.
type installed struct {
	serial string
	seen   time.Time
}

// secretWatch polls each VaultSecret's Secret and records every distinct
// certificate, how close a served certificate came to expiring, and how
// often a Secret was missing or expired once it had existed.
type secretWatch struct {
	mu       sync.Mutex
	certs    map[string][]installed
	notAfter map[string]time.Time
	minLeft  map[string]time.Duration
	lapses   map[string]int
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
	update   chan struct{}
}

func watchSecrets(t *testing.T, c *cluster, names []string) *secretWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &secretWatch{certs: map[string][]installed{}, notAfter: map[string]time.Time{}, minLeft: map[string]time.Duration{},
		lapses: map[string]int{}, cancel: cancel, done: make(chan struct{}), update: make(chan struct{}, 1)}
	// Read through apiserver-b: the controllers write through both.
	cl := c.apis[len(c.apis)-1].client
	go func() {
		defer close(w.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, n := range names {
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				s, err := cl.CoreV1().Secrets(tenantNS).Get(rctx, n, metav1.GetOptions{})
				rcancel()
				now := time.Now()
				w.mu.Lock()
				had := len(w.certs[n]) > 0
				switch {
				case ctx.Err() != nil:
				case err != nil:
					if had && apierrors.IsNotFound(err) {
						w.lapses[n]++
					}
				default:
					crt, perr := parseCert(s.Data["tls.crt"])
					if perr != nil {
						break
					}
					left := crt.NotAfter.Sub(now)
					if left <= 0 {
						w.lapses[n]++
					}
					if cur, ok := w.minLeft[n]; !ok || left < cur {
						w.minLeft[n] = left
					}
					sn := serialOf(crt)
					if l := w.certs[n]; len(l) == 0 || l[len(l)-1].serial != sn {
						w.certs[n] = append(l, installed{serial: sn, seen: now})
						w.notAfter[sn] = crt.NotAfter
						select {
						case w.update <- struct{}{}:
						default:
						}
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *secretWatch) stop() {
	w.once.Do(func() { w.cancel(); <-w.done })
}

func (w *secretWatch) snapshot() map[string][]installed {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]installed{}
	for k, v := range w.certs {
		out[k] = append([]installed(nil), v...)
	}
	return out
}

// waitFor waits until ok holds for the certificates seen so far.
func (w *secretWatch) waitFor(ok func(map[string][]installed) bool, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		if ok(w.snapshot()) {
			return true
		}
		select {
		case <-w.update:
		case <-time.After(500 * time.Millisecond):
		case <-deadline:
			return ok(w.snapshot())
		}
	}
}

// counts is the number of certificates seen per Secret.
func (w *secretWatch) counts() string {
	s := w.snapshot()
	var keys []string
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s=%d", k, len(s[k])))
	}
	return strings.Join(out, " ")
}

func (w *secretWatch) lastSeen() string {
	s := w.snapshot()
	var out []string
	for k, l := range s {
		if len(l) > 0 {
			out = append(out, fmt.Sprintf("%s@%s", k, l[len(l)-1].seen.Format("15:04:05.0")))
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
