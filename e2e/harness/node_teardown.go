package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// teardown removes everything the node made, in the order that leaves
// nothing behind: the controllers first (so no Deployment recreates the
// pods), then the pods through the kubelet (it stops their sandboxes and
// releases their network), then the kubelet, whatever containerd still
// runs, containerd, and what no process removes on exit: mounts, the
// bridge, kubepods cgroups, iptables chains. Each step logs and goes on.
func (n *Node) teardown() { n.stopOnce.Do(n.stop) }

// Stop tears the node down now (cleanup does too); Leftovers then tells
// whether anything of it is still there.
func (n *Node) Stop() { n.teardown() }

func (n *Node) stop() {
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		n.procs[name].stop(10 * time.Second)
	}
	if n.procs["kubelet"] != nil {
		n.deletePods(90 * time.Second)
	}
	n.procs["kubelet"].stop(15 * time.Second)
	var netns []string
	if n.procs["containerd"] != nil {
		netns = n.removeContainers()
	}
	n.procs["containerd"].stop(15 * time.Second)
	n.unmountUnder(append([]string{n.l.Dir, n.l.ContainerdState, n.l.ContainerdRoot}, netns...)...)
	for _, p := range netns {
		os.Remove(p)
	}
	if n.l.Bridge != "" {
		_ = exec.Command("ip", "link", "delete", n.l.Bridge).Run()
	}
	n.removeKubepodsCgroups()
	n.removeIPTables()
	n.removeHostLeftovers()
	n.restoreSysctls()
}

// deletePods removes the static pod manifests and deletes every pod bound
// to the node, then waits for the kubelet to have stopped them (a pod
// object disappears only once its kubelet confirms).
func (n *Node) deletePods(timeout time.Duration) {
	if entries, err := os.ReadDir(n.l.Manifests); err == nil {
		for _, e := range entries {
			os.Remove(filepath.Join(n.l.Manifests, e.Name()))
		}
	}
	ctx := context.Background()
	pods := n.cp.Client.CoreV1().Pods("")
	sel := metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name}
	deadline := time.Now().Add(timeout)
	for {
		list, err := pods.List(ctx, sel)
		if err != nil {
			n.env.Logf("node teardown: list pods: %v", err)
			return
		}
		if len(list.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			n.env.Logf("node teardown: %d pods still on %s after %s", len(list.Items), n.Name, timeout)
			return
		}
		grace := int64(5)
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				_ = n.cp.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// removeContainers kills and removes whatever containers containerd
// still has (the kubelet may have left sandboxes), and returns their
// network namespaces' bind mounts, which ctr does not release.
func (n *Node) removeContainers() []string {
	var netns []string
	out, err := n.ctr("containers", "ls", "-q")
	if err != nil {
		n.env.Logf("node teardown: %v", err)
		return nil
	}
	for _, id := range strings.Fields(out) {
		if info, err := n.ctr("containers", "info", id); err == nil {
			netns = append(netns, networkNamespace(info)...)
		}
		_, _ = n.ctr("tasks", "kill", "-s", "SIGKILL", id)
		for i := 0; i < 50; i++ {
			if _, err := n.ctr("tasks", "delete", "-f", id); err == nil || strings.Contains(err.Error(), "not found") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := n.ctr("containers", "delete", id); err != nil {
			n.env.Logf("node teardown: %v", err)
		}
	}
	return netns
}

// networkNamespace returns the path of the network namespace a container
// joins (from `ctr containers info`), when it is a bind-mounted file.
func networkNamespace(info string) []string {
	var c struct {
		Spec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string } `json:"namespaces"`
			} `json:"linux"`
		} `json:"Spec"`
	}
	if json.Unmarshal([]byte(info), &c) != nil {
		return nil
	}
	var out []string
	for _, ns := range c.Spec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" && !strings.HasPrefix(ns.Path, "/proc/") {
			out = append(out, ns.Path)
		}
	}
	return out
}

// unmountUnder lazily unmounts every mount point at or under the given
// paths, deepest first: the kubelet's tmpfs volumes, containerd's rootfs
// overlays and shm, network namespaces.
func (n *Node) unmountUnder(roots ...string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountPath(fields[4])
		for _, r := range roots {
			if r != "" && (p == r || strings.HasPrefix(p, r+"/")) {
				points = append(points, p)
				break
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		if out, err := exec.Command("umount", "-l", p).CombinedOutput(); err != nil && !strings.Contains(string(out), "not mounted") {
			n.env.Logf("node teardown: umount %s: %v: %s", p, err, out)
		}
	}
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(p string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(p)
}

// removeKubepodsCgroups removes the kubelet's kubepods cgroups in every
// cgroup v1 hierarchy (and the unified one), children first; the
// kubelet leaves them behind when it stops.
func (n *Node) removeKubepodsCgroups() {
	tops, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	more, _ := filepath.Glob("/sys/fs/cgroup/kubepods*")
	for _, top := range append(tops, more...) {
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				n.env.Logf("node teardown: rmdir %s: %v", dirs[i], err)
			}
		}
	}
}

var iptablesTables = []string{"filter", "nat", "mangle"}

// iptablesChains returns the chains of every table, "iptables/nat/NAME".
func iptablesChains() map[string]bool {
	chains := map[string]bool{}
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range iptablesTables {
			out, _ := exec.Command(bin, "-w", "-t", table, "-S").Output()
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && (f[0] == "-N" || f[0] == "-P") {
					chains[bin+"/"+table+"/"+f[1]] = true
				}
			}
		}
	}
	return chains
}

// removeIPTables deletes the node's DNAT rule and the KUBE-* chains the
// kubelet created (those absent before it started), with the rules that
// jump to them.
func (n *Node) removeIPTables() {
	if n.dnatRule != nil {
		if out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat", "-D"}, n.dnatRule...)...).CombinedOutput(); err != nil {
			n.env.Logf("node teardown: delete the DNAT rule: %v: %s", err, out)
		}
	}
	if n.chains == nil {
		return
	}
	for key := range iptablesChains() {
		parts := strings.SplitN(key, "/", 3)
		bin, table, chain := parts[0], parts[1], parts[2]
		if n.chains[key] || !strings.HasPrefix(chain, "KUBE-") {
			continue
		}
		out, _ := exec.Command(bin, "-w", "-t", table, "-S").Output()
		for _, rule := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(rule, "-A ") && strings.Contains(rule+" ", " -j "+chain+" ") {
				// -S prints rules shell-quoted (comments have spaces).
				_ = exec.Command("sh", "-c", bin+" -w -t "+table+" -D "+strings.TrimPrefix(rule, "-A ")).Run()
			}
		}
		_ = exec.Command(bin, "-w", "-t", table, "-F", chain).Run()
	}
	for key := range iptablesChains() {
		parts := strings.SplitN(key, "/", 3)
		if !n.chains[key] && strings.HasPrefix(parts[2], "KUBE-") {
			if out, err := exec.Command(parts[0], "-w", "-t", parts[1], "-X", parts[2]).CombinedOutput(); err != nil {
				n.env.Logf("node teardown: %s -t %s -X %s: %v: %s", parts[0], parts[1], parts[2], err, out)
			}
		}
	}
}

// removeHostLeftovers removes what CNI and the kubelet write outside the
// node's directories: libcni's result cache (/var/lib/cni/results, named
// after the network) and the kubelet's /var/log/containers symlinks into
// the node's pod logs.
func (n *Node) removeHostLeftovers() {
	if cached, err := filepath.Glob("/var/lib/cni/results/" + n.Name + "-*"); err == nil {
		for _, f := range cached {
			os.Remove(f)
		}
	}
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, n.l.PodLogs+"/") {
			os.Remove(l)
		}
	}
}

// kubeletSysctls are the kernel tunables the kubelet sets at start
// (setupKernelTunables, with protectKernelDefaults false) and never
// restores: among them kernel.panic_on_oops=1, which a shared test
// machine must not keep.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func readSysctls() map[string]string {
	m := map[string]string{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			m[k] = strings.TrimSpace(string(b))
		}
	}
	return m
}

// restoreSysctls puts back the tunables as they were before the kubelet.
func (n *Node) restoreSysctls() {
	for k, v := range n.sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v+"\n"), 0o644); err != nil {
			n.env.Logf("node teardown: restore %s=%s: %v", k, v, err)
		}
	}
}

// Leftovers lists what of the node is still on this machine after Stop:
// processes (its containerd, kubelet, shims), mounts under its
// directories, its bridge, kubepods cgroups, its DNAT rule and KUBE-*
// chains, changed kernel tunables. Empty when the teardown left nothing.
func (n *Node) Leftovers() []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, n.l.Socket) || strings.Contains(cmd, n.l.Dir+"/") {
			left = append(left, "process: "+cmd)
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 {
				p := unescapeMountPath(f[4])
				for _, r := range []string{n.l.Dir, n.l.ContainerdState} {
					if p == r || strings.HasPrefix(p, r+"/") {
						left = append(left, "mount: "+p)
					}
				}
			}
		}
	}
	if exec.Command("ip", "link", "show", n.l.Bridge).Run() == nil {
		left = append(left, "bridge: "+n.l.Bridge)
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*"); len(cg) > 0 {
		left = append(left, "cgroups: "+strings.Join(cg, " "))
	}
	if out, _ := exec.Command("iptables", "-w", "-t", "nat", "-S").Output(); strings.Contains(string(out), n.Name) {
		left = append(left, "iptables: the DNAT rule of "+n.Name)
	}
	for key := range iptablesChains() {
		if !n.chains[key] && strings.Contains(key, "/KUBE-") {
			left = append(left, "iptables chain: "+key)
		}
	}
	for k, v := range readSysctls() {
		if n.sysctls[k] != v {
			left = append(left, fmt.Sprintf("sysctl %s=%s (was %s)", k, v, n.sysctls[k]))
		}
	}
	return left
}
