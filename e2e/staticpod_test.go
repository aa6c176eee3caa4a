package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// readStaticPod parses deploy/static-pod.yaml.
func readStaticPod(t *testing.T) *corev1.Pod {
	t.Helper()
	b, err := os.ReadFile(harness.RepoPath(t, "deploy/static-pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatalf("deploy/static-pod.yaml: %v", err)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("deploy/static-pod.yaml has %d containers, want 1", len(pod.Spec.Containers))
	}
	return &pod
}

// dockerRunArgs turns the static pod into `docker run` arguments the way
// kubelet would run it: hostPath volumes become bind mounts of hostDirs
// (host path in the manifest -> directory standing in for it), and the
// security context becomes user, read-only root, dropped capabilities and
// no-new-privileges. args replaces the container's args.
func dockerRunArgs(t *testing.T, pod *corev1.Pod, image string, hostDirs map[string]string, args []string) []string {
	t.Helper()
	c := pod.Spec.Containers[0]
	out := []string{"run", "-d", "--label", harness.TestLabel}
	if pod.Spec.HostNetwork {
		out = append(out, "--network", "host")
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil {
		t.Fatalf("static pod: the container must say which user it runs as (securityContext.runAsUser)")
	}
	user := strconv.FormatInt(*sc.RunAsUser, 10)
	if sc.RunAsGroup != nil {
		user += ":" + strconv.FormatInt(*sc.RunAsGroup, 10)
	}
	out = append(out, "--user", user)
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		out = append(out, "--read-only")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		out = append(out, "--security-opt", "no-new-privileges")
	}
	if sc.Capabilities != nil {
		for _, d := range sc.Capabilities.Drop {
			out = append(out, "--cap-drop", string(d))
		}
		for _, a := range sc.Capabilities.Add {
			out = append(out, "--cap-add", string(a))
		}
	}
	for _, m := range c.VolumeMounts {
		var hp *corev1.HostPathVolumeSource
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name {
				hp = v.HostPath
			}
		}
		if hp == nil {
			t.Fatalf("static pod: volume %q is not a hostPath", m.Name)
		}
		dir, ok := hostDirs[hp.Path]
		if !ok {
			t.Fatalf("static pod: the test has no stand-in for hostPath %s", hp.Path)
		}
		// As kubelet does: DirectoryOrCreate makes a root-owned 0755
		// directory; Directory must already exist.
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			if hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
				t.Fatalf("static pod: hostPath %s (type %v) must exist", hp.Path, hp.Type)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		mount := dir + ":" + m.MountPath
		if m.ReadOnly {
			mount += ":ro"
		}
		out = append(out, "-v", mount)
	}
	out = append(out, image)
	return append(out, args...)
}

// setArg replaces the value of --name in args, failing if it is absent.
func setArg(t *testing.T, args []string, name, value string) []string {
	t.Helper()
	out := append([]string(nil), args...)
	for i, a := range out {
		if strings.HasPrefix(a, "--"+name+"=") {
			out[i] = "--" + name + "=" + value
			return out
		}
	}
	t.Fatalf("static pod has no --%s", name)
	return nil
}

func argValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// TestStaticPodStartsAsWritten runs deploy/static-pod.yaml's image, args,
// mounts and user with docker, as kubelet would on a kubeadm node, and a
// kube-apiserver with deploy/encryption-config.yaml on that socket. Only
// the two site-specific values change: --vault-addr points at the test's
// Vault and --health-addr at a free port (the manifest's 8787 would clash
// between tests running in parallel on one host network).
func TestStaticPodStartsAsWritten(t *testing.T) {
	if _, err := harness.Docker("info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("this test runs the plugin image with docker: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("this test creates root-owned host directories and files as kubelet and kubeadm do; run it as root")
	}
	pod := readStaticPod(t)
	c := pod.Spec.Containers[0]

	repo, tag, _ := strings.Cut(c.Image, ":")
	if tag == "" || tag == "latest" {
		t.Fatalf("static pod image %q: pin a release tag, not latest", c.Image)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("static pod: give resource requests so the plugin is not starved on a busy control plane")
	}

	// The plugin's Vault deadline must be shorter than kube-apiserver's
	// KMS timeout, or kube-apiserver gives up first and the reason is lost.
	ecfg, err := os.ReadFile(harness.RepoPath(t, "deploy/encryption-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*timeout:\s*(\S+)`).FindSubmatch(ecfg)
	if m == nil {
		t.Fatal("deploy/encryption-config.yaml has no kms timeout")
	}
	apiTimeout, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	vaultTimeout, err := time.ParseDuration(argValue(c.Args, "vault-timeout"))
	if err != nil {
		t.Fatalf("static pod --vault-timeout: %v", err)
	}
	if vaultTimeout >= apiTimeout {
		t.Fatalf("--vault-timeout=%s is not below the EncryptionConfiguration timeout %s", vaultTimeout, apiTimeout)
	}

	// The image, built as `make image` builds it.
	ref := repo + ":e2e-" + harness.RandomSuffix()
	harness.BuildImage(t, "plugin", ref, "e2e-"+tag, map[string]string{
		"vaultkms-plugin": harness.StaticBuild(t, "github.com/vaultkms/vaultkms/cmd/vaultkms-plugin"),
	})
	labels, err := harness.Docker("image", "inspect", "--format", `{{index .Config.Labels "org.opencontainers.image.version"}} {{index .Config.Labels "org.opencontainers.image.title"}}`, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(labels); got != "e2e-"+tag+" vaultkms-plugin" {
		t.Errorf("image OCI labels version and title = %q", got)
	}

	// Vault, with the Transit key and AppRole the manifest names.
	v := harness.StartVault(t)
	etcDir, runDir := pluginHost(t, v, c.Args)
	hostDirs := map[string]string{"/etc/vaultkms": etcDir, "/run/vaultkms": runDir}

	healthPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args := setArg(t, c.Args, "vault-addr", v.Addr)
	args = setArg(t, args, "health-addr", fmt.Sprintf("127.0.0.1:%d", healthPort))

	run := func(t *testing.T, runArgs []string) string {
		t.Helper()
		id, err := harness.Docker(runArgs...)
		if err != nil {
			t.Fatal(err)
		}
		id = strings.TrimSpace(id)
		t.Cleanup(func() { _, _ = harness.Docker("rm", "-f", id) })
		return id
	}

	t.Run("the previous user model (uid 65532) cannot bind in the kubelet-made directory", func(t *testing.T) {
		// What deploy/static-pod.yaml used to do: the image's non-root
		// user, whose socket directory and credentials root owns.
		old := pod.DeepCopy()
		uid, gid := int64(65532), int64(65532)
		old.Spec.Containers[0].SecurityContext.RunAsUser, old.Spec.Containers[0].SecurityContext.RunAsGroup = &uid, &gid
		dir := filepath.Join(filepath.Dir(runDir), "run-old")
		oldDirs := map[string]string{"/etc/vaultkms": etcDir, "/run/vaultkms": dir}
		id := run(t, dockerRunArgs(t, old, ref, oldDirs, args))
		exited := false
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !exited; time.Sleep(200 * time.Millisecond) {
			st, _ := harness.Docker("inspect", "--format", "{{.State.Status}}", id)
			exited = strings.TrimSpace(st) == "exited"
		}
		logs, _ := dockerLogs(id)
		if !exited {
			t.Fatalf("uid 65532 was expected to exit; it is still running. log:\n%s", logs)
		}
		if !strings.Contains(logs, "permission denied") {
			t.Fatalf("uid 65532 was expected to fail with permission denied; log:\n%s", logs)
		}
	})

	id := run(t, dockerRunArgs(t, pod, ref, hostDirs, args))
	socket := filepath.Join(runDir, "kms.sock")
	if argValue(c.Args, "listen") != "unix:///run/vaultkms/kms.sock" {
		t.Fatalf("static pod --listen=%s, want the socket the EncryptionConfiguration names", argValue(c.Args, "listen"))
	}
	var st syscall.Stat_t
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Stat(socket, &st) != nil {
		if time.Now().After(deadline) {
			logs, _ := dockerLogs(id)
			t.Fatalf("the plugin made no socket at %s within 30s; its log:\n%s", socket, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Uid != 0 || st.Mode&0o777 != 0o600 {
		t.Fatalf("socket owner %d mode %o, want root-owned 0600 so only kube-apiserver (root) can call it", st.Uid, st.Mode&0o777)
	}

	// The manifest's liveness probe, on the substituted port.
	probe := c.LivenessProbe.HTTPGet
	url := fmt.Sprintf("http://%s:%d%s", probe.Host, healthPort, probe.Path)
	ok := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			ok = resp.StatusCode == 200
			resp.Body.Close()
		}
	}
	if !ok {
		logs, _ := dockerLogs(id)
		t.Fatalf("liveness probe %s never answered 200; plugin log:\n%s", url, logs)
	}

	// kube-apiserver with the shipped EncryptionConfiguration, its socket
	// path being the hostPath stand-in.
	config := strings.ReplaceAll(string(ecfg), "unix:///run/vaultkms/kms.sock", "unix://"+socket)
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{EncryptionConfig: config})
	ctx := context.Background()
	_, err = cp.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "through-the-static-pod"},
		StringData: map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	if err != nil {
		logs, _ := dockerLogs(id)
		t.Fatalf("create a Secret through the plugin: %v\nplugin log:\n%s", err, logs)
	}
	raw := cp.RawGet("/registry/secrets/default/through-the-static-pod")
	if !strings.HasPrefix(string(raw), "k8s:enc:kms:v2:vault:") {
		t.Fatalf("etcd holds %q..., want the kms v2 prefix of provider vault", raw[:min(len(raw), 30)])
	}
	got, err := cp.Client.CoreV1().Secrets("default").Get(ctx, "through-the-static-pod", metav1.GetOptions{})
	if err != nil || string(got.Data["k"]) != "v" {
		t.Fatalf("read the Secret back: %v %q", err, got.Data["k"])
	}
	t.Logf("static pod as written (uid 0, no capabilities, read-only root): socket %s root 0600, kube-apiserver stores Secrets under k8s:enc:kms:v2:vault", socket)
}

func dockerLogs(id string) (string, error) {
	cmdOut, err := harness.DockerCombined("logs", id)
	return cmdOut, err
}

// TestSystemdUnitMatchesStaticPod keeps deploy/vaultkms-plugin.service
// starting the plugin exactly as the static pod (proven above) does.
func TestSystemdUnitMatchesStaticPod(t *testing.T) {
	pod := readStaticPod(t)
	f, err := os.Open(harness.RepoPath(t, "deploy/vaultkms-plugin.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var exec strings.Builder
	inExec := false
	props := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "ExecStart=") {
			inExec = true
			line = strings.TrimPrefix(line, "ExecStart=")
		}
		if inExec {
			cont := strings.HasSuffix(line, "\\")
			exec.WriteString(strings.TrimSuffix(line, "\\") + " ")
			inExec = cont
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			props[k] = v
		}
	}
	fields := strings.Fields(exec.String())
	if len(fields) == 0 || filepath.Base(fields[0]) != "vaultkms-plugin" {
		t.Fatalf("ExecStart runs %v, want vaultkms-plugin", fields)
	}
	if got, want := strings.Join(fields[1:], " "), strings.Join(pod.Spec.Containers[0].Args, " "); got != want {
		t.Fatalf("the unit's flags differ from the static pod's:\nunit: %s\npod:  %s", got, want)
	}
	for k, want := range map[string]string{"User": "root", "CapabilityBoundingSet": "", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "RuntimeDirectory": "vaultkms", "RuntimeDirectoryMode": "0755"} {
		if got, ok := props[k]; !ok || got != want {
			t.Errorf("unit %s=%q, want %q (the static pod's user model)", k, got, want)
		}
	}
}

// pluginHost prepares what the static pod's plugin needs as an operator
// does: in Vault, the Transit key and the AppRole its flags name; on the
// node, /etc/vaultkms (the files its flags name, each 0600) and
// /run/vaultkms (left for the kubelet to create). It returns the
// temporary directories standing in for the two, since a test must not
// write the host's /etc and /run.
func pluginHost(t *testing.T, v *harness.Vault, args []string) (etcDir, runDir string) {
	t.Helper()
	key := argValue(args, "transit-key")
	v.Enable("transit", "transit")
	v.TransitKey("transit", key)
	v.Policy("kms-plugin", harness.PluginPolicy("transit", key))
	v.EnableAuth("approle", "approle")
	v.Write("auth/approle/role/kms", map[string]any{"token_policies": "kms-plugin", "token_ttl": "1h"})

	host := harness.SocketDir(t)
	etcDir, runDir = filepath.Join(host, "etc"), filepath.Join(host, "run")
	if err := os.Mkdir(etcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(v.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string]string{
		"/etc/vaultkms/vault-ca.pem": string(ca),
		"/etc/vaultkms/role-id":      v.Read("auth/approle/role/kms/role-id").Data["role_id"].(string),
		"/etc/vaultkms/secret-id":    v.Write("auth/approle/role/kms/secret-id", nil).Data["secret_id"].(string),
	}
	for _, flagName := range []string{"vault-ca-cert", "approle-role-id-file", "approle-secret-id-file"} {
		p := argValue(args, flagName)
		content, ok := creds[p]
		if !ok {
			t.Fatalf("static pod --%s=%s: the test prepares only the files %v", flagName, p, []string{"/etc/vaultkms/vault-ca.pem", "/etc/vaultkms/role-id", "/etc/vaultkms/secret-id"})
		}
		if err := os.WriteFile(filepath.Join(etcDir, filepath.Base(p)), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return etcDir, runDir
}
