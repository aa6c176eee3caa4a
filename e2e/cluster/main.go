// Command cluster brings up a one-node cluster on this machine with the
// chart installed, for trying the chart without a cluster of one's own:
// etcd and kube-apiserver, a kubelet with a private containerd and a CNI
// bridge, kube-scheduler and kube-controller-manager
// (e2e/harness/node.go), a real Vault, and `helm install --wait` of
// charts/vaultkms with the controller image built here. It prints the
// KUBECONFIG and keeps everything running until Ctrl-C, which tears it
// all down. `make cluster` runs it; it needs root, containerd, the CNI
// plugins and docker (as TestChartOnNode does).
package main

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

func main() {
	env := &harness.Main{}
	env.StopOnSignal()
	defer env.Close()
	if why := harness.NodeUnsupported(); why != "" {
		env.Fatalf("%s", why)
	}
	step := func(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

	step("starting etcd and kube-apiserver")
	cp := harness.StartControlPlane(env, harness.ControlPlaneOptions{Node: true})
	step("starting the node: containerd, kube-scheduler, kube-controller-manager, kubelet")
	node := harness.StartNode(env, cp)
	step("starting Vault, reachable from pods at %s; kubernetes auth against this API server", node.HostIP)
	v := harness.StartVaultWith(env, harness.VaultOptions{ReachableAt: []net.IP{node.HostIP}})
	harness.ConfigureKubernetesAuth(v, cp, "kubernetes")
	step("building the controller image and running helm install --wait")
	chart := harness.InstallChartOnNode(env, cp, node, v)

	dir := env.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		env.Fatalf("kubeconfig: %v", err)
	}
	bin, _ := harness.BinDir()
	rootTokenFile := harness.TokenFile(env, v.RootToken)
	fmt.Printf("\nThe chart is installed in %s on node %s. In another terminal:\n\n", chart.Namespace, node.Name)
	fmt.Printf("  export KUBECONFIG=%s\n", kubeconfig)
	fmt.Printf("  %s -n %s status vaultkms\n", filepath.Join(bin, "helm"), chart.Namespace)
	fmt.Printf("  kubectl -n %s get pods -o wide            # if kubectl is installed\n", chart.Namespace)
	fmt.Printf("  export VAULT_ADDR=%s VAULT_CACERT=%s VAULT_TOKEN=$(cat %s)\n", v.Addr, v.CA.CertFile, rootTokenFile)
	fmt.Printf("  # pods reach Vault at %s; its kubernetes auth is mounted at auth/kubernetes\n", chart.VaultAddr)
	fmt.Printf("\nPress Ctrl-C to stop and remove everything.\n")
	// StopOnSignal tears everything down and exits on Ctrl-C, during the
	// setup above as well as now.
	select {}
}
