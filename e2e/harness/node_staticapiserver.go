package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// StaticAPIServer is a kube-apiserver the node's kubelet runs from its
// manifest directory, as kubeadm runs one on every control-plane node.
type StaticAPIServer struct {
	// URL is https://127.0.0.1:<port> (host network).
	URL string
	// Config is an admin client config of this API server.
	Config *rest.Config
	// MirrorPod is the kube-system pod the kubelet publishes for it.
	MirrorPod string
	// Manifest is its file in the kubelet's manifest directory.
	Manifest string
}

// StaticAPIServerOptions are the host directories a kubeadm control-plane
// node would have, as temporary stand-ins (a test must not write the
// host's /etc or /run): the pod mounts each at the path kubeadm and
// docs/install-kubeadm.md give, so the files in them are used as written.
type StaticAPIServerOptions struct {
	// EncryptionConfig is written to the stand-in of /etc/kubernetes/enc
	// as encryption-config.yaml, and named by the API server's flags as
	// docs/install-kubeadm.md names it.
	EncryptionConfig string
	// SocketDir stands in for /run/vaultkms, where the plugin's static pod
	// listens (the same host directory as that pod's).
	SocketDir string
}

// StartStaticAPIServer writes a kube-apiserver static pod in kubeadm's
// shape (host network, the node's PKI, liveness, readiness and startup
// probes on /livez and /readyz, the kms flags and mounts of
// docs/install-kubeadm.md) into the kubelet's manifest directory and waits
// until the kubelet runs it and it answers /readyz, kms-providers
// included. It stores in the control plane's etcd, serves the same
// certificate and trusts the same client CA as the first API server, so
// every user of the control plane is accepted by both.
func (n *Node) StartStaticAPIServer(opts StaticAPIServerOptions) *StaticAPIServer {
	n.env.Helper()
	first := n.cp.Env.ControlPlane.GetAPIServer()
	pki := n.env.TempDir()
	in := func(dir, name string) string { return filepath.Join(dir, name) }
	files := map[string]string{
		in(first.CertDir, "apiserver.crt"): in(pki, "apiserver.crt"), in(first.CertDir, "apiserver.key"): in(pki, "apiserver.key"),
		in(first.CertDir, "sa-signer.crt"): in(pki, "sa.pub"), in(first.CertDir, "sa-signer.key"): in(pki, "sa.key"),
		// envtest's client certificate CA: what kubeadm calls ca.crt.
		in(first.CertDir, "client-cert-auth-ca.crt"): in(pki, "ca.crt"),
	}
	etcdTLS := n.cp.EtcdRoot != nil
	if etcdTLS {
		// kube-apiserver's etcd client certificate, as kubeadm's
		// apiserver-etcd-client (etcd's root user here).
		files[n.cp.EtcdRoot.CA] = in(pki, "etcd-ca.crt")
		files[n.cp.EtcdRoot.Cert] = in(pki, "apiserver-etcd-client.crt")
		files[n.cp.EtcdRoot.Key] = in(pki, "apiserver-etcd-client.key")
	}
	if err := copyFiles(files); err != nil {
		n.env.Fatalf("static kube-apiserver: copy the PKI: %v", err)
	}
	enc := n.env.TempDir()
	if err := os.WriteFile(filepath.Join(enc, "encryption-config.yaml"), []byte(opts.EncryptionConfig), 0o600); err != nil {
		n.env.Fatalf("static kube-apiserver: %v", err)
	}
	port, err := FreePort()
	if err != nil {
		n.env.Fatalf("static kube-apiserver: %v", err)
	}
	image := BinaryImage(n.env, "kube-apiserver")
	n.LoadImage(image)

	pod := staticAPIServerPod(image, port, n.HostIP, n.cp.EtcdURL, etcdTLS, first.SecureServing.URL("https", "/").String(), pki, enc, opts.SocketDir)
	b, err := yaml.Marshal(pod)
	if err != nil {
		n.env.Fatalf("static kube-apiserver: %v", err)
	}
	s := &StaticAPIServer{
		URL:       fmt.Sprintf("https://127.0.0.1:%d", port),
		MirrorPod: pod.Name + "-" + n.Name,
		Manifest:  filepath.Join(n.Manifests, "kube-apiserver.yaml"),
	}
	if err := os.WriteFile(s.Manifest, b, 0o600); err != nil {
		n.env.Fatalf("static kube-apiserver: %v", err)
	}
	// The kubelet stops a static pod whose manifest is gone; the node's
	// teardown does the same for whatever is left.
	n.env.Cleanup(func() { os.Remove(s.Manifest) })
	s.Config = rest.CopyConfig(n.cp.Config)
	s.Config.Host = s.URL
	client := kubernetes.NewForConfigOrDie(s.Config)

	ctx := context.Background()
	check := func() error {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").Param("verbose", "true").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("the kubelet's static kube-apiserver is not ready at %s: %v\n%s\nits log:\n%s", s.URL, err, body, n.staticPodLog("kube-system", pod.Name, "kube-apiserver"))
		}
		return nil
	}
	n.eventually(150*time.Second, "kubelet", check)
	return s
}

// staticPodLog is, for a static pod container, the end of its last two
// logs as the kubelet writes them (one per attempt): a container that
// exits at once shows why in the previous attempt's.
func (n *Node) staticPodLog(namespace, pod, container string) string {
	files, _ := filepath.Glob(filepath.Join(n.l.PodLogs, namespace+"_"+pod+"-"+n.Name+"_*", container, "*.log"))
	if len(files) == 0 {
		return "(no log yet)"
	}
	var out strings.Builder
	for _, f := range files[max(0, len(files)-2):] {
		b, _ := os.ReadFile(f)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Fprintf(&out, "--- %s\n%s\n", filepath.Base(f), b)
	}
	return out.String()
}

// staticAPIServerPod is kube-apiserver's static pod as kubeadm writes it,
// reduced to what a single test node needs, with the additions
// docs/install-kubeadm.md gives for the plugin. Host paths are the
// test's stand-ins, mounted where kubeadm mounts them.
func staticAPIServerPod(image string, port int, advertise net.IP, etcdURL string, etcdTLS bool, issuer, pki, enc, socketDir string) *corev1.Pod {
	probe := func(path string, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Host: "127.0.0.1", Path: path, Port: intstr.FromInt(port), Scheme: corev1.URISchemeHTTPS}},
			InitialDelaySeconds: 1, PeriodSeconds: 2, TimeoutSeconds: 15, FailureThreshold: failures,
		}
	}
	hostPath := func(name, path string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: path, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}}
	}
	command := []string{"/kube-apiserver",
		// The node's address, as kubeadm advertises it (the API server
		// refuses a loopback one).
		"--advertise-address=" + advertise.String(),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		// The control plane's first API server owns the kubernetes
		// Service's endpoints, on its own port; a second one on another
		// port would rewrite them.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--client-ca-file=/etc/kubernetes/pki/ca.crt",
		"--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
		"--tls-private-key-file=/etc/kubernetes/pki/apiserver.key",
		"--etcd-servers=" + etcdURL,
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=/etc/kubernetes/pki/sa.pub",
		"--service-account-signing-key-file=/etc/kubernetes/pki/sa.key",
		"--service-cluster-ip-range=10.0.0.0/24",
		// docs/install-kubeadm.md, step 4.
		"--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml",
		"--encryption-provider-config-automatic-reload=true",
	}
	if etcdTLS {
		command = append(command, "--etcd-cafile=/etc/kubernetes/pki/etcd-ca.crt",
			"--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt", "--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key")
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "kube-apiserver", Namespace: "kube-system",
			Labels: map[string]string{"component": "kube-apiserver", "tier": "control-plane"}},
		Spec: corev1.PodSpec{
			HostNetwork:       true,
			PriorityClassName: "system-node-critical",
			SecurityContext:   &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "kube-apiserver", Image: image, ImagePullPolicy: corev1.PullNever,
				Command:        command,
				StartupProbe:   probe("/livez", 60),
				LivenessProbe:  probe("/livez", 8),
				ReadinessProbe: probe("/readyz", 3),
				VolumeMounts: []corev1.VolumeMount{
					{Name: "k8s-certs", MountPath: "/etc/kubernetes/pki", ReadOnly: true},
					{Name: "enc", MountPath: "/etc/kubernetes/enc", ReadOnly: true},
					{Name: "vaultkms", MountPath: "/run/vaultkms"},
				},
			}},
			Volumes: []corev1.Volume{hostPath("k8s-certs", pki), hostPath("enc", enc), hostPath("vaultkms", socketDir)},
		},
	}
}

// WriteKubeconfig writes an admin kubeconfig of this API server to path:
// the control plane's, pointed at this server (it serves the same
// certificate and trusts the same client CA).
func (s *StaticAPIServer) WriteKubeconfig(cp *ControlPlane, path string) error {
	if err := cp.WriteKubeconfig(path); err != nil {
		return err
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = s.URL
	}
	return clientcmd.WriteToFile(*cfg, path)
}
