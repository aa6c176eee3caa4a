package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
)

// nodeLayout is where one test node keeps everything it writes: every
// path is under the test's temporary directories, so two nodes (or two
// runs) never share a file, a socket or a network.
type nodeLayout struct {
	Name string // node name, also the CNI network's name
	// Dir holds the configs, the kubelet's root and the pod logs.
	Dir string
	// Socket is containerd's gRPC socket (a short path: sockets are
	// limited to 108 bytes).
	Socket string
	// ContainerdRoot and ContainerdState are containerd's own root and
	// state directories.
	ContainerdRoot, ContainerdState string
	CNIConfDir                      string
	KubeletRoot, PodLogs, Manifests string
	Bridge                          string // at most 15 bytes (IFNAMSIZ)
	Subnet                          *net.IPNet
	Gateway                         net.IP
	SandboxImage                    string
	KubeletPort, KubeletHealthzPort int
	// ClientCAFile is the CA of the API server's kubelet client
	// certificate.
	ClientCAFile string
}

// containerdConfig is a containerd 1.6 configuration (version 2) serving
// CRI for one node and nothing else of the host's: its own root, state,
// sockets, runc root and plugin directory; the stream server on loopback
// and a port of the kernel's choosing.
//
// restrict_oom_score_adj: without CAP_SYS_RESOURCE (as on this CI
// machine) runc cannot lower a container's oom_score_adj below its
// parent's, and every sandbox fails with "can't get final child's PID
// from pipe"; with it containerd never asks for less than its own.
func containerdConfig(l nodeLayout) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`, l.ContainerdRoot, l.ContainerdState, l.Socket, l.Socket+".ttrpc",
		l.ContainerdState+"/opt", l.SandboxImage, l.ContainerdState+"/runc", l.CNIConfDir)
}

// cniConfList is the pod network: a bridge of the node's own with
// host-local addresses from its own subnet (the leases in the node's
// directory) and portmap for hostPorts. No masquerading: pods talk only
// to this host (the API server, Vault), never beyond it.
func cniConfList(l nodeLayout) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       l.Name,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": l.Bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": l.Subnet.String(), "gateway": l.Gateway.String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": l.Dir + "/ipam",
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// kubeletConfig is the KubeletConfiguration of a node on a shared test
// machine: cgroup v1 with cgroupfs (this host is not systemd-booted and
// v1.37 refuses cgroup v1 unless failCgroupV1 is false), swap tolerated,
// no node allocatable enforcement, and eviction and image GC thresholds
// so loose that a full disk on the CI machine does not evict the pods
// under test. The kubelet serves on the bridge's gateway only (its node
// IP: the kubelet refuses a loopback one), authenticates the API server
// by its client certificate and asks it to authorize every request, as
// a kubeadm node does; its health endpoint stays on loopback.
func kubeletConfig(l nodeLayout) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
staticPodPath: %s
podLogsDir: %s
enforceNodeAllocatable: []
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%", imagefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
fileCheckFrequency: 2s
serializeImagePulls: false
resolvConf: /etc/resolv.conf
hairpinMode: hairpin-veth
`, l.Gateway, l.KubeletPort, l.KubeletHealthzPort, l.ClientCAFile, l.Socket, l.Manifests, l.PodLogs)
}

// pickSubnet returns a /24 in 10.223.0.0/16 that no route of the host
// (a route per network: docker's, another test node's) overlaps, chosen
// from seed so concurrent nodes most likely pick different ones.
func pickSubnet(routes string, seed byte) (*net.IPNet, net.IP, error) {
	for i := 0; i < 256; i++ {
		third := byte(int(seed)+i) % 255
		if third == 0 {
			continue
		}
		cidr := fmt.Sprintf("10.223.%d.0/24", third)
		if strings.Contains(routes, cidr) {
			continue
		}
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			return nil, nil, err
		}
		gw := net.IPv4(10, 223, third, 1).To4()
		return n, gw, nil
	}
	return nil, nil, fmt.Errorf("no free /24 in 10.223.0.0/16")
}
