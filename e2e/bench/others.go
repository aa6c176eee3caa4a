package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// The controllers measured beside vaultkms's, on the same Vault, API server
// and KV data. Each is built by `make bench-tools` (e2e/tools/build.sh
// bench) from a module of its own under e2e/tools, and its CRDs are read
// from that module in the module cache.

// reconcilers is what every controller runs with (-reconcilers): vaultkms.s default
// --max-concurrent-reconciles.
var reconcilers = 8

// vaultCounts is what Vault's audit log recorded in a window: every
// response, split by the kind of request.
type vaultCounts struct {
	all, reads, logins, other, errors int
	otherPaths                        map[string]int
}

func (c vaultCounts) String() string {
	s := fmt.Sprintf("%d (%d reads, %d logins", c.all, c.reads, c.logins)
	if c.other > 0 {
		paths := slices.Sorted(maps.Keys(c.otherPaths))
		for i, p := range paths {
			paths[i] = fmt.Sprintf("%d %s", c.otherPaths[p], p)
		}
		s += fmt.Sprintf(", %d other: %s", c.other, strings.Join(paths, ", "))
	}
	if c.errors > 0 {
		s += fmt.Sprintf(", %d errors", c.errors)
	}
	return s + ")"
}

// audit reads a Vault file audit log from where the last count stopped.
type audit struct {
	path   string
	offset int64
	env    *harness.Main
}

// mark skips what the log holds so far.
func (a *audit) mark() { a.count() }

// count counts the responses logged since the last mark or count. Vault
// writes a request's audit entry before it answers, so what a controller
// was answered is in the log.
func (a *audit) count() vaultCounts {
	f, err := os.Open(a.path)
	if err != nil {
		a.env.Fatalf("open audit log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(a.offset, io.SeekStart); err != nil {
		a.env.Fatalf("seek audit log: %v", err)
	}
	var c vaultCounts
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // a partial last line is read by the next count
		}
		a.offset += int64(len(line))
		e, ok := harness.ParseAuditResponse(line)
		if !ok {
			continue
		}
		c.all++
		switch {
		case e.Error != "":
			c.errors++
		case strings.HasPrefix(e.Path, "auth/") && strings.HasSuffix(e.Path, "/login"):
			c.logins++
		case strings.HasPrefix(e.Path, "secret/data/"):
			c.reads++
		default:
			c.other++
			if c.otherPaths == nil {
				c.otherPaths = map[string]int{}
			}
			c.otherPaths[e.Path]++
		}
	}
	return c
}

// syncResult is one controller's row of the side-by-side table.
type syncResult struct {
	name     string
	config   string
	created  time.Duration
	synced   time.Duration
	first    vaultCounts
	refresh  vaultCounts
	rss      float64
	skipped  string
	n        int
	interval time.Duration
}

// other is a controller measured beside vaultkms's.
type other struct {
	key          string // for -others
	name, config string
	binary       string // in bin/
	module       string // its module, required by e2e/tools/<tools>
	tools        string
	crdDir       string // in its module
	gvk          schema.GroupVersionKind
	// args are its flags, with metrics on metricsAddr.
	args func(metricsAddr string) []string
	env  []string
	// setup creates what its objects refer to (store, auth) in namespace,
	// and waits until it is usable.
	setup func(b *sideBySide, namespace, role string)
	// object is the i-th object of namespace, synced into Secret target.
	object func(namespace, name, target string) *unstructured.Unstructured
	ready  func(*watched) bool
}

// sideBySide holds what all controllers share.
type sideBySide struct {
	env        *harness.Main
	v          *harness.Vault
	cp         *harness.ControlPlane
	c          client.Client
	kubeconfig string
	audit      *audit
	n          int
	interval   time.Duration
}

func others() []other {
	esoArgs := func(extra ...string) func(string) []string {
		return func(metrics string) []string {
			return append([]string{"--metrics-addr=" + metrics, "--enable-leader-election=false", fmt.Sprintf("--concurrent=%d", reconcilers),
				"--client-qps=-1", "--loglevel=error"}, extra...)
		}
	}
	esoObject := func(namespace, name, target string) *unstructured.Unstructured {
		return obj("external-secrets.io/v1", "ExternalSecret", namespace, name, map[string]any{
			"refreshInterval": "1m",
			"secretStoreRef":  map[string]any{"name": "vault", "kind": "SecretStore"},
			"target":          map[string]any{"name": target},
			"dataFrom":        []any{map[string]any{"extract": map[string]any{"key": "app/config"}}},
		})
	}
	esoReady := func(w *watched) bool { return w.conditionTrue("Ready") }
	eso := other{
		name: "External Secrets Operator", binary: "external-secrets", module: "github.com/external-secrets/external-secrets", tools: "eso",
		crdDir: "config/crds/bases", gvk: schema.GroupVersionKind{Group: "external-secrets.io", Version: "v1", Kind: "ExternalSecret"},
		setup: esoSetup, object: esoObject, ready: esoReady,
	}
	esoDefault, esoCached := eso, eso
	esoDefault.config = fmt.Sprintf("--concurrent=%d --client-qps=-1 --namespace=<its own>; Vault token cache off (its default)", reconcilers)
	esoDefault.args = esoArgs()
	esoCached.name += " (token cache)"
	esoCached.config = fmt.Sprintf("--concurrent=%d --client-qps=-1 --namespace=<its own> --experimental-enable-vault-token-cache", reconcilers)
	esoCached.args = esoArgs("--experimental-enable-vault-token-cache")
	vso := other{
		name: "Vault Secrets Operator", binary: "vault-secrets-operator", module: "github.com/hashicorp/vault-secrets-operator", tools: "vso",
		crdDir: "config/crd/bases", gvk: schema.GroupVersionKind{Group: "secrets.hashicorp.com", Version: "v1beta1", Kind: "VaultStaticSecret"},
		config: fmt.Sprintf("--max-concurrent-reconciles=%d --kube-client-qps=-1; client cache persistence none (its default)", reconcilers),
		args: func(metrics string) []string {
			return []string{"--metrics-bind-address=" + metrics, "--health-probe-bind-address=0", "--leader-elect=false",
				fmt.Sprintf("--max-concurrent-reconciles=%d", reconcilers), "--kube-client-qps=-1", "--zap-log-level=error"}
		},
		env:   []string{"OPERATOR_NAMESPACE=vso-system"},
		setup: vsoSetup,
		object: func(namespace, name, target string) *unstructured.Unstructured {
			return obj("secrets.hashicorp.com/v1beta1", "VaultStaticSecret", namespace, name, map[string]any{
				"vaultAuthRef": "vault", "mount": "secret", "type": "kv-v2", "path": "app/config", "refreshAfter": "60s",
				"destination": map[string]any{"name": target, "create": true},
			})
		},
		ready: func(w *watched) bool {
			return w.Status.SecretMAC != "" && w.Status.LastGeneration == w.Metadata.Generation
		},
	}
	esoDefault.key, esoCached.key, vso.key = "eso", "eso-cache", "vso"
	return []other{vso, esoDefault, esoCached}
}

func obj(apiVersion, kind, namespace, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "spec": spec}}
	u.SetNamespace(namespace)
	u.SetName(name)
	return u
}

func conditionTrue(u *unstructured.Unstructured, kind string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == kind && m["status"] == "True" {
			return true
		}
	}
	return false
}

func esoSetup(b *sideBySide, namespace, role string) {
	ca, err := os.ReadFile(b.v.CA.CertFile)
	if err != nil {
		b.env.Fatalf("%v", err)
	}
	store := obj("external-secrets.io/v1", "SecretStore", namespace, "vault", map[string]any{
		"provider": map[string]any{"vault": map[string]any{
			"server": b.v.Addr, "path": "secret", "version": "v2", "caBundle": base64.StdEncoding.EncodeToString(ca),
			"auth": map[string]any{"kubernetes": map[string]any{
				"mountPath": "kubernetes", "role": role,
				"serviceAccountRef": map[string]any{"name": "app", "audiences": []any{"vault"}},
			}},
		}},
	})
	b.create(store)
	b.waitFor(store, func(u *unstructured.Unstructured) bool { return conditionTrue(u, "Ready") })
}

func vsoSetup(b *sideBySide, namespace, role string) {
	ca, err := os.ReadFile(b.v.CA.CertFile)
	if err != nil {
		b.env.Fatalf("%v", err)
	}
	if err := b.c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "vault-ca"},
		Data: map[string][]byte{"ca.crt": ca}}); err != nil {
		b.env.Fatalf("create CA secret: %v", err)
	}
	b.create(obj("secrets.hashicorp.com/v1beta1", "VaultConnection", namespace, "vault", map[string]any{
		"address": b.v.Addr, "caCertSecretRef": "vault-ca",
	}))
	b.create(obj("secrets.hashicorp.com/v1beta1", "VaultAuth", namespace, "vault", map[string]any{
		"vaultConnectionRef": "vault", "method": "kubernetes", "mount": "kubernetes",
		"kubernetes": map[string]any{"role": role, "serviceAccount": "app", "audiences": []any{"vault"}, "tokenExpirationSeconds": int64(600)},
	}))
	// VaultAuth and VaultConnection are checked when first used.
}

func (b *sideBySide) create(u *unstructured.Unstructured) {
	if err := b.c.Create(context.Background(), u); err != nil {
		b.env.Fatalf("create %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
}

func (b *sideBySide) waitFor(u *unstructured.Unstructured, ok func(*unstructured.Unstructured) bool) {
	deadline := time.Now().Add(time.Minute)
	for {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(u.GroupVersionKind())
		if err := b.c.Get(context.Background(), client.ObjectKeyFromObject(u), got); err == nil && ok(got) {
			return
		}
		if time.Now().After(deadline) {
			b.env.Fatalf("%s %s/%s not ready after a minute: %v", u.GetKind(), u.GetNamespace(), u.GetName(), got.Object["status"])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// moduleDir is the directory of module in the module cache, as required by
// e2e/tools/<tools>/go.mod.
func moduleDir(env *harness.Main, tools, module string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = harness.RepoPath(env, "e2e/tools/"+tools)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s in e2e/tools/%s: %v", module, tools, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("%s is not in the module cache: run `go mod download` in e2e/tools/%s", module, tools)
	}
	return dir, nil
}

// run measures o: n objects created at once in a namespace of their own,
// time until all report synced and their Secrets exist, Vault requests for
// that and for the next refresh interval, and RSS at the end.
func (b *sideBySide) run(o other) syncResult {
	res := syncResult{name: o.name, config: o.config, n: b.n, interval: b.interval}
	dir, err := harness.BinDir()
	if err != nil {
		b.env.Fatalf("%v", err)
	}
	bin := filepath.Join(dir, o.binary)
	if _, err := os.Stat(bin); err != nil {
		res.skipped = fmt.Sprintf("%s is missing: `make bench-tools` builds it", bin)
		return res
	}
	mod, err := moduleDir(b.env, o.tools, o.module)
	if err != nil {
		res.skipped = err.Error()
		return res
	}
	if _, err := envtest.InstallCRDs(b.cp.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(mod, o.crdDir)}, ErrorIfPathMissing: true}); err != nil {
		b.env.Fatalf("install the CRDs of %s: %v", o.name, err)
	}

	ns := strings.ToLower(strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(o.name))
	b.cp.Namespace(ns, "app")
	b.v.Write("auth/kubernetes/role/"+ns, tenantRole(map[string]any{"bound_service_account_names": "app", "bound_service_account_namespaces": ns,
		"token_policies": "app-read", "token_ttl": "1h", "audience": "vault"}))
	if o.env != nil {
		for _, e := range o.env {
			if v, ok := strings.CutPrefix(e, "OPERATOR_NAMESPACE="); ok {
				b.cp.Namespace(v)
			}
		}
	}

	port, err := harness.FreePort()
	if err != nil {
		b.env.Fatalf("%v", err)
	}
	args := o.args(fmt.Sprintf("127.0.0.1:%d", port))
	if strings.HasPrefix(o.name, "External Secrets") {
		// Two runs of ESO share the cluster; each watches only its own
		// namespace.
		args = append(args, "--namespace="+ns)
	}
	proc := b.start(bin, args, o.env)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	waitMetrics(b.env, metricsURL)
	o.setup(b, ns, ns)

	synced := b.startSynced(o, ns, time.Now())
	b.audit.mark()
	start := time.Now()
	if err := inParallel(0, b.n, func(i int) error {
		return b.c.Create(context.Background(), o.object(ns, fmt.Sprintf("s-%05d", i), fmt.Sprintf("s-%05d", i)))
	}); err != nil {
		b.env.Fatalf("create %s: %v", o.gvk.Kind, err)
	}
	res.created = time.Since(start)
	synced()
	res.synced = time.Since(start)
	res.first = b.audit.count()
	time.Sleep(b.interval)
	res.refresh = b.audit.count()
	res.rss = rssOf(b.env, metricsURL)
	proc()
	return res
}

// startSynced starts following the objects of o in ns and their Secrets,
// as for vaultkms, and returns what waits until n objects are synced and n
// Secrets with their names hold data.
func (b *sideBySide) startSynced(o other, ns string, start time.Time) (wait func()) {
	deadline := start.Add(10 * time.Minute)
	gvr := o.gvk.GroupVersion().WithResource(strings.ToLower(o.gvk.Kind) + "s")
	objects := startCount(b.env, b.cp.Config, gvr, ns, b.n, o.ready, deadline)
	secrets := startCount(b.env, b.cp.Config, corev1.SchemeGroupVersion.WithResource("secrets"), ns, b.n, func(w *watched) bool {
		return strings.HasPrefix(w.Metadata.Name, "s-") && len(w.Data) > 0
	}, deadline)
	return func() { objects(); secrets() }
}

// start runs bin with the admin kubeconfig and returns its stop.
func (b *sideBySide) start(bin string, args, env []string) func() {
	logf, err := os.Create(filepath.Join(b.env.TempDir(), filepath.Base(bin)+".log"))
	if err != nil {
		b.env.Fatalf("%v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+b.kubeconfig), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = harness.KillWithParent(&syscall.SysProcAttr{})
	if err := cmd.Start(); err != nil {
		b.env.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		err := cmd.Wait()
		logf.Close()
		if !stopping.Load() {
			log, _ := os.ReadFile(logf.Name())
			fmt.Fprintf(os.Stderr, "%s exited: %v\n%s\n", filepath.Base(bin), err, tail(string(log), 4000))
		}
		close(done)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stopping.Store(true)
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	b.env.Cleanup(stop)
	return stop
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// rssOf is the process_resident_memory_bytes a controller reports, in
// MiB, after 3 s of quiet: the same measure for every controller.
func rssOf(env *harness.Main, metricsURL string) float64 {
	time.Sleep(3 * time.Second)
	m, err := scrape(metricsURL, "process_resident_memory_bytes")
	if err != nil {
		env.Fatalf("scrape: %v", err)
	}
	return m["process_resident_memory_bytes"] / (1 << 20)
}

// printSideBySide prints the table and the ratios against vaultkms (the
// first row).
func printSideBySide(rows []syncResult) {
	fmt.Printf("\nSide by side: %d kv secrets created at once on the same Vault and API server, refresh %s\n", rows[0].n, rows[0].interval)
	fmt.Printf("  Vault requests are counted in Vault's audit log (responses), the same way for every controller.\n")
	for _, r := range rows {
		if r.skipped != "" {
			fmt.Printf("  %s: not measured: %s\n", r.name, r.skipped)
			continue
		}
		fmt.Printf("  %s: %s\n", r.name, r.config)
	}
	fmt.Printf("\n  %-44s %9s %13s %9s %13s %9s %9s\n", "controller", "all synced", "Vault (sync)", "per secret", "Vault (next "+rows[0].interval.String()+")", "per secret", "RSS MiB")
	base := rows[0]
	for _, r := range rows {
		if r.skipped != "" {
			continue
		}
		fmt.Printf("  %-44s %9.1fs %13d %9.2f %13d %9.2f %9.1f\n", r.name, r.synced.Seconds(), r.first.all, float64(r.first.all)/float64(r.n),
			r.refresh.all, float64(r.refresh.all)/float64(r.n), r.rss)
	}
	for _, r := range rows[1:] {
		if r.skipped != "" {
			continue
		}
		fmt.Printf("  %-44s %9.2fx %12.2fx %9s %12.2fx %9s %8.2fx\n", "ratio "+shortName(r.name)+" / vaultkms", r.synced.Seconds()/base.synced.Seconds(),
			ratio(r.first.all, base.first.all), "", ratio(r.refresh.all, base.refresh.all), "", r.rss/base.rss)
	}
	fmt.Printf("\n  Vault requests by kind:\n")
	for _, r := range rows {
		if r.skipped != "" {
			continue
		}
		fmt.Printf("  %-44s sync %s; next %s %s; created in %.1fs\n", r.name, r.first, r.interval, r.refresh, r.created.Seconds())
	}
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func shortName(s string) string {
	switch {
	case strings.HasPrefix(s, "Vault Secrets Operator"):
		return "VSO"
	case strings.HasSuffix(s, "(token cache)"):
		return "ESO+cache"
	case strings.HasPrefix(s, "External Secrets"):
		return "ESO"
	}
	return s
}
