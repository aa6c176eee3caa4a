package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is a real kubelet on this machine with a private containerd, a CNI
// bridge of its own, kube-scheduler and kube-controller-manager (all
// controllers): the chart's pods run under it as on any cluster's node.
// Everything it starts or creates (processes, shims, mounts, the bridge,
// kubepods cgroups, iptables chains) is removed on cleanup.
type Node struct {
	// Name is the Node object's name.
	Name string
	// HostIP is this host's address on the node's bridge: where pods
	// reach the host (Vault started with VaultOptions.ReachableAt).
	HostIP net.IP
	// Manifests is the kubelet's static pod directory.
	Manifests string

	env       Env
	cp        *ControlPlane
	l         nodeLayout
	logs      map[string]string // component -> log file
	procs     map[string]*process
	chains    map[string]bool   // iptables chains present before the kubelet
	sysctls   map[string]string // kernel tunables the kubelet sets, as they were
	dnatRule  []string
	startedAt time.Time
	stopOnce  sync.Once
}

// NodeUnsupported says why this machine cannot run a test node, or ""
// when it can: root, containerd and the CNI plugins (Debian's containerd
// and containernetworking-plugins), docker (to build images), iptables.
func NodeUnsupported() string {
	if os.Geteuid() != 0 {
		return "a test node (kubelet, containerd) needs root"
	}
	for _, bin := range []string{"containerd", "ctr", "runc", "docker", "iptables", "ip", "umount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " is not installed (.ci/run installs containerd and containernetworking-plugins)"
		}
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat("/usr/lib/cni/" + p); err != nil {
			return "/usr/lib/cni/" + p + " is missing: apt-get install containernetworking-plugins"
		}
	}
	return ""
}

// StartNode starts a node registered with cp, which must have been started
// with ControlPlaneOptions.Node, and waits until it is Ready. It fails
// the test when the machine cannot run one (see NodeUnsupported: tests
// skip before calling it).
func StartNode(env Env, cp *ControlPlane) *Node {
	env.Helper()
	if why := NodeUnsupported(); why != "" {
		env.Fatalf("%s", why)
	}
	if cp.ServingCAFile == "" {
		env.Fatalf("StartNode needs a control plane started with ControlPlaneOptions{Node: true}")
	}
	n := &Node{env: env, cp: cp, logs: map[string]string{}, procs: map[string]*process{}, startedAt: time.Now()}
	n.l = n.layout(PauseImage(env))
	n.Name, n.HostIP, n.Manifests = n.l.Name, n.l.Gateway, n.l.Manifests
	env.Cleanup(n.teardown)
	n.chains = iptablesChains()
	n.sysctls = readSysctls()
	if cp.nodeEtcd != nil {
		// Pods (the auditor) reach etcd at the node's bridge.
		if err := cp.nodeEtcd.addServingIP(n.HostIP); err != nil {
			env.Fatalf("etcd serving certificate for the node: %v", err)
		}
	}

	n.createBridge()
	n.startContainerd()
	n.LoadImage(n.l.SandboxImage)
	conf, err := cniConfList(n.l)
	if err != nil {
		env.Fatalf("CNI config: %v", err)
	}
	if err := os.WriteFile(filepath.Join(n.l.CNIConfDir, "10-vaultkms.conflist"), conf, 0o644); err != nil {
		env.Fatalf("%v", err)
	}
	n.routeKubernetesService()
	n.startControllers()
	n.startKubelet()
	n.waitReady(3 * time.Minute)
	env.Logf("node %s Ready in %s (pods on %s, host at %s)", n.Name, time.Since(n.startedAt).Round(100*time.Millisecond), n.l.Subnet, n.HostIP)
	return n
}

func (n *Node) layout(sandboxImage string) nodeLayout {
	suffix := RandomSuffix()
	dir := n.env.TempDir()
	sock := SocketDir(n.env)
	routes, _ := exec.Command("ip", "-4", "route").CombinedOutput()
	seed, _ := strconv.ParseUint(suffix[:2], 16, 8)
	subnet, gw, err := pickSubnet(string(routes), byte(seed))
	if err != nil {
		n.env.Fatalf("%v", err)
	}
	l := nodeLayout{
		Name: "vk-node-" + suffix, Dir: dir, Socket: filepath.Join(sock, "containerd.sock"),
		ContainerdRoot: filepath.Join(dir, "containerd"), ContainerdState: filepath.Join(sock, "state"),
		CNIConfDir: filepath.Join(dir, "cni"), KubeletRoot: filepath.Join(dir, "kubelet"),
		PodLogs: filepath.Join(dir, "pod-logs"), Manifests: filepath.Join(dir, "manifests"),
		Bridge: "vk" + suffix, Subnet: subnet, Gateway: gw, SandboxImage: sandboxImage,
		ClientCAFile: filepath.Join(n.cp.Env.ControlPlane.GetAPIServer().CertDir, "kubelet-client-ca.crt"),
	}
	for _, p := range []*int{&l.KubeletPort, &l.KubeletHealthzPort} {
		if *p, err = FreePort(); err != nil {
			n.env.Fatalf("free port: %v", err)
		}
	}
	for _, d := range []string{l.ContainerdRoot, l.ContainerdState, l.CNIConfDir, l.KubeletRoot, l.PodLogs, l.Manifests} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			n.env.Fatalf("%v", err)
		}
	}
	return l
}

// createBridge creates the CNI bridge with the gateway address before any
// pod does (the bridge plugin takes it as it is): the kubelet's node IP
// must be an address of this host, and not a loopback one, and Vault
// listens there before the first pod starts.
func (n *Node) createBridge() {
	n.env.Helper()
	ones, _ := n.l.Subnet.Mask.Size()
	for _, args := range [][]string{
		{"link", "add", "name", n.l.Bridge, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", n.l.Gateway, ones), "dev", n.l.Bridge},
		{"link", "set", n.l.Bridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			n.env.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

func (n *Node) start(name, bin string, args ...string) {
	n.env.Helper()
	n.logs[name] = filepath.Join(n.l.Dir, name+".log")
	p, err := startProcess(bin, args, n.logs[name])
	if err != nil {
		n.env.Fatalf("%v", err)
	}
	n.procs[name] = p
}

// Log returns the tail of a component's log ("kubelet", "containerd",
// "kube-scheduler", "kube-controller-manager"), for failure messages.
func (n *Node) Log(name string) string {
	b, _ := os.ReadFile(n.logs[name])
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

func (n *Node) startContainerd() {
	n.env.Helper()
	cfg := filepath.Join(n.l.Dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(n.l)), 0o600); err != nil {
		n.env.Fatalf("%v", err)
	}
	n.start("containerd", "containerd", "--config", cfg)
	n.eventually(30*time.Second, "containerd", func() error {
		_, err := n.ctr("version")
		return err
	})
}

// ctr runs ctr against the node's containerd in the CRI namespace.
func (n *Node) ctr(args ...string) (string, error) {
	cmd := exec.Command("ctr", append([]string{"--address", n.l.Socket, "-n", "k8s.io"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// routeKubernetesService sends the pods' connections to the kubernetes
// Service's ClusterIP to the API server, as kube-proxy would (none runs
// here): a DNAT rule matching only this node's subnet, so nodes of
// concurrent tests each reach their own API server.
func (n *Node) routeKubernetesService() {
	n.env.Helper()
	u, err := url.Parse(n.cp.Config.Host)
	if err != nil {
		n.env.Fatalf("API server address %q: %v", n.cp.Config.Host, err)
	}
	port := u.Port()
	if port == "" {
		n.env.Fatalf("API server address %q has no port", n.cp.Config.Host)
	}
	n.dnatRule = []string{"PREROUTING", "-s", n.l.Subnet.String(), "-d", kubernetesServiceIP + "/32", "-p", "tcp", "--dport", "443",
		"-m", "comment", "--comment", "vaultkms test node " + n.Name, "-j", "DNAT", "--to-destination", net.JoinHostPort(n.l.Gateway.String(), port)}
	if out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat", "-A"}, n.dnatRule...)...).CombinedOutput(); err != nil {
		n.dnatRule = nil
		n.env.Fatalf("iptables DNAT for the kubernetes Service: %v: %s", err, out)
	}
}

// startControllers starts kube-scheduler and kube-controller-manager with
// every controller: service account tokens, the kube-root-ca.crt
// ConfigMaps pods trust the API server with, Deployments, ReplicaSets,
// the node lifecycle.
func (n *Node) startControllers() {
	n.env.Helper()
	kubeconfig := filepath.Join(n.l.Dir, "admin.kubeconfig")
	if err := n.cp.WriteKubeconfig(kubeconfig); err != nil {
		n.env.Fatalf("kubeconfig: %v", err)
	}
	certDir := n.cp.Env.ControlPlane.GetAPIServer().CertDir
	for _, name := range []string{"kube-scheduler", "kube-controller-manager"} {
		port, err := FreePort()
		if err != nil {
			n.env.Fatalf("free port: %v", err)
		}
		args := []string{"--kubeconfig=" + kubeconfig, "--leader-elect=false",
			"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
			"--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig}
		if name == "kube-controller-manager" {
			args = append(args, "--controllers=*", "--cert-dir="+filepath.Join(n.l.Dir, "kcm-certs"),
				"--root-ca-file="+n.cp.ServingCAFile,
				"--service-account-private-key-file="+filepath.Join(certDir, "sa-signer.key"),
				"--use-service-account-credentials=false")
		}
		n.start(name, Binary(n.env, name), args...)
	}
}

func (n *Node) startKubelet() {
	n.env.Helper()
	// The API server's identity at the kubelet, bound as kubeadm binds it.
	_, err := n.cp.Client.RbacV1().ClusterRoleBindings().Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vaultkms-test:apiserver-kubelet-client"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: kubeletClientName}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		n.env.Fatalf("bind the API server's kubelet client: %v", err)
	}
	cfg := filepath.Join(n.l.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(kubeletConfig(n.l)), 0o600); err != nil {
		n.env.Fatalf("%v", err)
	}
	kubeconfig := filepath.Join(n.l.Dir, "kubelet.kubeconfig")
	if err := n.cp.WriteKubeconfig(kubeconfig); err != nil {
		n.env.Fatalf("kubeconfig: %v", err)
	}
	n.start("kubelet", Binary(n.env, "kubelet"), "--config="+cfg, "--kubeconfig="+kubeconfig,
		"--root-dir="+n.l.KubeletRoot, "--node-ip="+n.l.Gateway.String(), "--hostname-override="+n.Name, "--v=1")
}

func (n *Node) waitReady(timeout time.Duration) {
	n.env.Helper()
	n.eventually(timeout, "kubelet", func() error {
		node, err := n.cp.Client.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s Ready=%s: %s", n.Name, c.Status, c.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", n.Name)
	})
}

// eventually polls check until it returns nil, failing the test with the
// last error and the tail of component's log at the deadline.
func (n *Node) eventually(timeout time.Duration, component string, check func() error) {
	n.env.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.env.Fatalf("after %s: %v\n%s log:\n%s", timeout, err, component, n.Log(component))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
