package harness

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
)

func TestPickSubnet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routes string
		seed   byte
		want   string
	}{
		{"seed picks the third octet", "default via 192.0.2.1 dev eth0", 7, "10.223.7.0/24"},
		{"a routed subnet is skipped", "10.223.7.0/24 dev vkab proto kernel", 7, "10.223.8.0/24"},
		{"zero is never used", "", 0, "10.223.1.0/24"},
		{"wraps past 254", "10.223.254.0/24 dev x", 254, "10.223.1.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, gw, err := pickSubnet(tc.routes, tc.seed)
			if err != nil {
				t.Fatal(err)
			}
			if n.String() != tc.want {
				t.Fatalf("subnet %s, want %s", n, tc.want)
			}
			if !n.Contains(gw) || gw[3] != 1 {
				t.Fatalf("gateway %s is not the first address of %s", gw, n)
			}
		})
	}
}

func TestCNIConfList(t *testing.T) {
	_, sub, _ := net.ParseCIDR("10.223.9.0/24")
	b, err := cniConfList(nodeLayout{Name: "vk-node-x", Dir: "/tmp/d", Bridge: "vkx", Subnet: sub, Gateway: net.IPv4(10, 223, 9, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Name    string
		Plugins []map[string]any
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Name != "vk-node-x" || len(conf.Plugins) != 2 {
		t.Fatalf("conflist %s", b)
	}
	br := conf.Plugins[0]
	if br["type"] != "bridge" || br["bridge"] != "vkx" || br["ipMasq"] != false {
		t.Fatalf("bridge plugin %v: want bridge vkx without masquerading", br)
	}
	if !strings.Contains(string(b), `"dataDir": "/tmp/d/ipam"`) || !strings.Contains(string(b), "10.223.9.0/24") {
		t.Fatalf("host-local leases or subnet not the node's own: %s", b)
	}
}

func TestNetworkNamespace(t *testing.T) {
	for _, tc := range []struct {
		name, info string
		want       []string
	}{
		{"sandbox with a bind-mounted netns", `{"Spec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/run/s/netns/cni-1"}]}}}`, []string{"/run/s/netns/cni-1"}},
		{"container joining its sandbox's", `{"Spec":{"linux":{"namespaces":[{"type":"network","path":"/proc/42/ns/net"}]}}}`, nil},
		{"host network", `{"Spec":{"linux":{"namespaces":[{"type":"pid"}]}}}`, nil},
		{"not JSON", `oops`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := networkNamespace(tc.info)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUnescapeMountPath(t *testing.T) {
	if got := unescapeMountPath(`/tmp/a\040b/c`); got != "/tmp/a b/c" {
		t.Fatalf("got %q", got)
	}
}

func TestKubeletConfigServesOnlyTheBridge(t *testing.T) {
	c := kubeletConfig(nodeLayout{Socket: "/tmp/s/containerd.sock", Manifests: "/tmp/m", PodLogs: "/tmp/l", KubeletPort: 1234, KubeletHealthzPort: 1235,
		Gateway: net.IPv4(10, 223, 9, 1), ClientCAFile: "/tmp/ca.crt"})
	for _, want := range []string{"address: 10.223.9.1\n", "healthzBindAddress: 127.0.0.1\n", "anonymous: {enabled: false}", "x509: {clientCAFile: /tmp/ca.crt}", "authorization: {mode: Webhook}", "port: 1234\n", "healthzPort: 1235\n", "failCgroupV1: false", "cgroupDriver: cgroupfs",
		"containerRuntimeEndpoint: unix:///tmp/s/containerd.sock", "staticPodPath: /tmp/m", "enforceNodeAllocatable: []", `nodefs.available: "1%"`} {
		if !strings.Contains(c, want) {
			t.Errorf("kubelet config lacks %q:\n%s", want, c)
		}
	}
}
