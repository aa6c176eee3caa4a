package main

import (
	"context"
	"fmt"
	dto "github.com/prometheus/client_model/go"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// scrape sums the samples of each named metric at url. A name may carry
// one label filter: `metric{label=value}`.
func scrape(url string, names ...string) (map[string]float64, error) {
	fams, err := families(url)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, n := range names {
		base, filter, _ := strings.Cut(strings.TrimSuffix(n, "}"), "{")
		lname, lvalue, _ := strings.Cut(filter, "=")
		f, ok := fams[base]
		if !ok {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if filter != "" {
				for _, l := range m.GetLabel() {
					if l.GetName() == lname && l.GetValue() != lvalue {
						continue metrics
					}
				}
			}
			switch {
			case m.Counter != nil:
				out[n] += m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[n] += m.GetGauge().GetValue()
			case m.Histogram != nil:
				// A histogram counts its observations: requests, for a latency.
				out[n] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out, nil
}

// families reads a Prometheus text endpoint.
func families(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// over counts the observations of a histogram above the first bucket
// bound of at least limit seconds, summed over its series.
func over(url, name string, limit float64) (float64, error) {
	fams, err := families(url)
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, m := range fams[name].GetMetric() {
		h := m.GetHistogram()
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() >= limit {
				total += float64(h.GetSampleCount() - b.GetCumulativeCount())
				break
			}
		}
	}
	return total, nil
}

// benchController measures n kv VaultSecrets created at once, the Vault
// requests per refresh, and controller memory with many unmanaged Secrets.
func benchController(env *harness.Main, n, unmanaged, managed int, measure []other) {
	v := harness.StartVault(env)
	// Vault's own record of requests, counted the same way for vaultkms's
	// controller and the ones measured beside it.
	aud := &audit{path: v.EnableFileAudit(), env: env}
	cp := harness.StartControlPlane(env, harness.ControlPlaneOptions{CRDDirs: []string{harness.RepoPath(env, "charts/vaultkms/crds")}})
	harness.ConfigureKubernetesAuth(v, cp, "kubernetes")
	cp.Namespace("app", "app")
	v.Policy("app-read", tenantPolicy)
	v.Write("auth/kubernetes/role/app", tenantRole(map[string]any{"bound_service_account_names": "app", "bound_service_account_namespaces": "app", "token_policies": "app-read", "token_ttl": "1h", "audience": "vault"}))
	v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "p"}})
	kubeconfig := cp.ApplyChartRBAC("vaultkms-system")
	writeSourcePaths(v)
	scheme := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(scheme)
	_ = corev1.AddToScheme(scheme)
	c, err := client.New(unthrottled(cp.Config), client.Options{Scheme: scheme})
	if err != nil {
		env.Fatalf("client: %v", err)
	}
	args := []string{"--vault-addr=" + v.Addr, "--vault-ca-cert=" + v.CA.CertFile, "--namespace=vaultkms-system", "--zap-log-level=info", fmt.Sprintf("--max-concurrent-reconciles=%d", reconcilers)}
	rss := func(ctrl *harness.Controller) float64 {
		time.Sleep(3 * time.Second)
		m, err := scrape(ctrl.MetricsURL, "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_next_gc_bytes",
			"go_memstats_sys_bytes", "go_memstats_heap_released_bytes", "go_memstats_heap_idle_bytes", "go_memstats_stack_inuse_bytes")
		if err != nil {
			env.Fatalf("scrape: %v", err)
		}
		// What makes up the RSS: the heap's live objects and garbage
		// (alloc), the spans holding them (in use), and the size at which
		// the next collection starts.
		fmt.Printf("  (Go heap: %.1f MiB allocated, %.1f MiB in use, next GC at %.1f MiB; free but kept %.1f MiB; stacks %.1f MiB; all the runtime holds %.1f MiB)\n",
			m["go_memstats_heap_alloc_bytes"]/(1<<20), m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_memstats_next_gc_bytes"]/(1<<20),
			(m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"])/(1<<20), m["go_memstats_stack_inuse_bytes"]/(1<<20),
			(m["go_memstats_sys_bytes"]-m["go_memstats_heap_released_bytes"])/(1<<20))
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", ctrl.Pid)); err == nil {
			var rss, anon float64
			for _, l := range strings.Split(string(b), "\n") {
				f := strings.Fields(l)
				if len(f) == 3 && f[0] == "Rss:" {
					rss, _ = strconv.ParseFloat(f[1], 64)
				}
				if len(f) == 3 && f[0] == "Anonymous:" {
					anon, _ = strconv.ParseFloat(f[1], 64)
				}
			}
			fmt.Printf("  (resident: %.1f MiB anonymous, %.1f MiB of files: the binary)\n", anon/1024, (rss-anon)/1024)
		}
		return m["process_resident_memory_bytes"] / (1 << 20)
	}

	fmt.Printf("\nController memory: only managed Secrets are cached\n")
	idle := harness.RunController(env, kubeconfig, args...)
	waitMetrics(env, idle.MetricsURL)
	none := rss(idle)
	idle.Stop()
	createUnmanaged(env, c, unmanaged)
	// The floor is measured here, with no controller running, on the same
	// API server (already holding the unmanaged Secrets) as the runs below.
	cp.Namespace(floorNamespace)
	var profileFloor func()
	if apiserverProfile != "" {
		profileFloor = func() { go profileAPIServer(env, cp, apiserverProfile+".floor", 5*time.Second) }
	}
	floor := measureFloor(env, c, n, profileFloor)
	busyArgs := args
	pprofURL := ""
	if controllerProfile != "" || controllerHeapProfile != "" {
		port, err := harness.FreePort()
		if err != nil {
			env.Fatalf("%v", err)
		}
		busyArgs = append(slices.Clone(args), fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", port))
		pprofURL = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile", port)
	}
	busy := harness.RunController(env, kubeconfig, busyArgs...)
	waitMetrics(env, busy.MetricsURL)
	with := rss(busy)
	fmt.Printf("  RSS with 0 unmanaged Secrets: %.1f MiB; with %d unmanaged Secrets: %.1f MiB (%+.1f MiB)\n", none, unmanaged, with, with-none)

	shape := "one kv path each, an inline login each"
	if benchSources > 1 {
		shape = fmt.Sprintf("%d kv sources each, all sharing the VaultAuth app", benchSources)
		if err := c.Create(context.Background(), &v1alpha1.VaultAuth{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "app"},
			Spec: v1alpha1.VaultAuthSpec{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app"}}}); err != nil {
			env.Fatalf("VaultAuth: %v", err)
		}
	}
	fmt.Printf("\n%d kv VaultSecrets created at once (ttl 60s; %s)\n", n, shape)
	ttl := metav1.Duration{Duration: time.Minute}
	aud.mark()
	if apiserverProfile != "" {
		go profileAPIServer(env, cp, apiserverProfile, 10*time.Second)
	}
	if controllerProfile != "" {
		go profile(env, http.DefaultClient, pprofURL, controllerProfile, 10*time.Second)
	}
	if vaultProfile != "" {
		go profile(env, vaultPprofClient(env, v), v.Addr+"/v1/sys/pprof/profile", vaultProfile, 10*time.Second)
	}
	allReadyWait := startAllReady(env, cp.Config, n, time.Now())
	cpuBefore := sampleCPU()
	start := time.Now()
	created := createVaultSecrets(env, c, 0, n, ttl)
	allReadyWait()
	allReady := time.Since(start)
	cpuUsed := sampleCPU().since(cpuBefore)
	mine := syncResult{name: "vaultkms-controller", config: fmt.Sprintf("--max-concurrent-reconciles=%d; no client-side rate limit (controller-runtime's default); the chart's RBAC", reconcilers),
		n: n, interval: ttl.Duration, created: created, synced: allReady, first: aud.count()}
	synced := "vaultkms_controller_syncs_total{result=synced}"
	before, _ := scrape(busy.MetricsURL, "vaultkms_controller_vault_request_duration_seconds", "vaultkms_controller_tenant_logins_total", synced,
		"rest_client_requests_total{method=GET}", "rest_client_requests_total{method=POST}", "rest_client_requests_total{method=PUT}",
		"rest_client_requests_total{method=PATCH}", "rest_client_requests_total{method=DELETE}", "vaultkms_controller_syncs_total{result=throttled}")
	fmt.Printf("  created in %.1fs; all Ready after %.1fs (%.0f VaultSecrets/s); %g Vault reads and %g logins for the first sync\n",
		created.Seconds(), allReady.Seconds(), float64(n)/allReady.Seconds(), before["vaultkms_controller_vault_request_duration_seconds"], before["vaultkms_controller_tenant_logins_total"])
	fmt.Printf("  controller's API requests since it started (reads outside its cache and writes): GET %g, POST %g, PUT %g, PATCH %g, DELETE %g\n",
		before["rest_client_requests_total{method=GET}"], before["rest_client_requests_total{method=POST}"], before["rest_client_requests_total{method=PUT}"],
		before["rest_client_requests_total{method=PATCH}"], before["rest_client_requests_total{method=DELETE}"])
	fmt.Printf("  passes deferred because their namespace was at its limit of passes calling Vault: %g\n", before["vaultkms_controller_syncs_total{result=throttled}"])
	// A pass holding its slot for a second makes its namespace slow (a
	// quarter of the workers) for a minute: these say whether that
	// happened.
	slowPasses, _ := over(busy.MetricsURL, "vaultkms_controller_sync_duration_seconds", 1)
	slowReads, _ := over(busy.MetricsURL, "vaultkms_controller_vault_request_duration_seconds", 1)
	fmt.Printf("  passes over 1 s: %g; Vault requests over 1 s: %g\n", slowPasses, slowReads)
	fmt.Printf("  CPU from the first create to all Ready: %s\n", cpuUsed)
	fmt.Printf("  API server floor, no controller and no Vault: the %d VaultSecret creates, %d Secret creates and %d status writes alone took %.1fs; vaultkms took %.2fx that\n",
		n, n, n, floor.Seconds(), allReady.Seconds()/floor.Seconds())
	// One refresh cycle: every VaultSecret re-reads once between 2/3 and
	// 9/15 of its ttl after its last read; wait a full ttl.
	time.Sleep(ttl.Duration)
	mine.refresh = aud.count()
	after, _ := scrape(busy.MetricsURL, "vaultkms_controller_vault_request_duration_seconds", "vaultkms_controller_tenant_logins_total", synced)
	reads := after["vaultkms_controller_vault_request_duration_seconds"] - before["vaultkms_controller_vault_request_duration_seconds"]
	logins := after["vaultkms_controller_tenant_logins_total"] - before["vaultkms_controller_tenant_logins_total"]
	refreshes := after[synced] - before[synced]
	fmt.Printf("  next %s: %.0f refreshes, %.0f Vault reads = %.2f reads per VaultSecret per refresh, %.0f logins\n", ttl.Duration, refreshes, reads, reads/refreshes, logins)
	mine.rss = rss(busy)
	fmt.Printf("  controller RSS with %d managed Secrets: %.1f MiB\n", n, mine.rss)

	if managed > n {
		long := metav1.Duration{Duration: time.Hour}
		allReadyWait := startAllReady(env, cp.Config, managed, time.Now())
		start := time.Now()
		createVaultSecrets(env, c, n, managed, long)
		allReadyWait()
		fmt.Printf("\n%d managed VaultSecrets (%d more created, all Ready after %.1fs)\n", managed, managed-n, time.Since(start).Seconds())
		fmt.Printf("  controller RSS with %d managed VaultSecrets and Secrets: %.1f MiB\n", managed, rss(busy))
		if controllerHeapProfile != "" {
			heap := strings.TrimSuffix(pprofURL, "/profile") + "/heap"
			resp, err := http.Get(heap + "?gc=1")
			if err != nil {
				env.Fatalf("heap profile: %v", err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				env.Fatalf("heap profile %s: %d %v", heap, resp.StatusCode, err)
			}
			if err := os.WriteFile(controllerHeapProfile, b, 0o600); err != nil {
				env.Fatalf("%v", err)
			}
		}
	}
	if len(measure) == 0 {
		return
	}

	// The same n kv secrets with the other controllers, one at a time,
	// each in a namespace of its own, with vaultkms's controller stopped so
	// that its refreshes are not counted.
	busy.Stop()
	admin := filepath.Join(env.TempDir(), "kubeconfig")
	if err := cp.WriteKubeconfig(admin); err != nil {
		env.Fatalf("admin kubeconfig: %v", err)
	}
	b := &sideBySide{env: env, v: v, cp: cp, kubeconfig: admin, audit: aud, n: n, interval: ttl.Duration}
	b.c, err = client.New(unthrottled(cp.Config), client.Options{Scheme: scheme})
	if err != nil {
		env.Fatalf("client: %v", err)
	}
	rows := []syncResult{mine}
	for _, o := range measure {
		fmt.Printf("\n%s: %d secrets created at once\n", o.name, n)
		r := b.run(o)
		if r.skipped != "" {
			fmt.Printf("  not measured: %s\n", r.skipped)
		} else {
			fmt.Printf("  created in %.1fs; all synced after %.1fs; Vault: %s; next %s: %s; RSS %.1f MiB\n",
				r.created.Seconds(), r.synced.Seconds(), r.first, r.interval, r.refresh, r.rss)
		}
		rows = append(rows, r)
	}
	printSideBySide(rows)
}

// createVaultSecrets creates kv VaultSecrets vs-<from> to vs-<to-1> with 16
// writers and returns how long that took.
func createVaultSecrets(env *harness.Main, c client.Client, from, to int, ttl metav1.Duration) time.Duration {
	ctx := context.Background()
	start := time.Now()
	err := inParallel(from, to, func(i int) error {
		return c.Create(ctx, kvVaultSecret("app", fmt.Sprintf("vs-%05d", i), ttl))
	})
	if err != nil {
		env.Fatalf("create: %v", err)
	}
	return time.Since(start)
}

// tenantPolicy is the tenants' policy as docs/install-chart.md gives it:
// their kv paths and the three token paths the controllers call (to tell a
// refused path from a dead token, to renew, to revoke), which Vault's
// default policy would otherwise grant.
const tenantPolicy = `path "secret/data/app/*" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }`

// vaultDefaultPolicy (-vault-default-policy) gives the tenants' tokens
// Vault's default policy too, as a role does unless it sets
// token_no_default_policy. Its templated paths make Vault parse that
// policy again on every request.
var vaultDefaultPolicy bool

// tenantRole is a tenant role's fields, with or without the default
// policy.
func tenantRole(fields map[string]any) map[string]any {
	fields["token_no_default_policy"] = !vaultDefaultPolicy
	return fields
}

// benchSources is the number of kv sources of each VaultSecret (-sources):
// 1 is the one-path form with an inline login; more share the VaultAuth
// "app" and merge secret/app/config with secret/app/extra-<i>.
var benchSources = 1

// writeSourcePaths writes the extra kv paths of -sources, one key each.
func writeSourcePaths(v *harness.Vault) {
	for i := 1; i < benchSources; i++ {
		v.Write(fmt.Sprintf("secret/data/app/extra-%d", i), map[string]any{"data": map[string]any{fmt.Sprintf("key%d", i): "v"}})
	}
}

// kvVaultSecret is the bench's VaultSecret: the app role reading
// secret/app/config, refreshed every ttl.
func kvVaultSecret(namespace, name string, ttl metav1.Duration) *v1alpha1.VaultSecret {
	if benchSources > 1 {
		srcs := []v1alpha1.Source{{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}}}
		for i := 1; i < benchSources; i++ {
			srcs = append(srcs, v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: fmt.Sprintf("app/extra-%d", i)}})
		}
		return &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: v1alpha1.VaultSecretSpec{AuthRef: &v1alpha1.AuthRef{Name: "app"}, Sources: srcs, TTL: &ttl}}
	}
	return &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1alpha1.VaultSecretSpec{Auth: v1alpha1.Auth{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app"}},
			Source: v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}}, TTL: &ttl}}
}

// startAllReady starts following the VaultSecrets of namespace app and
// returns what waits until n are Ready.
func startAllReady(env *harness.Main, cfg *rest.Config, n int, start time.Time) (wait func()) {
	return startCount(env, cfg, v1alpha1.GroupVersion.WithResource("vaultsecrets"), "app", n, func(w *watched) bool {
		return w.conditionTrue("Ready")
	}, start.Add(10*time.Minute))
}

func createUnmanaged(env *harness.Main, c client.Client, n int) {
	ctx := context.Background()
	val := []byte(strings.Repeat("x", 1024))
	err := inParallel(0, n, func(i int) error {
		return c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("unmanaged-%05d", i)}, Data: map[string][]byte{"v": val}})
	})
	if err != nil {
		env.Fatalf("create unmanaged secret: %v", err)
	}
}

func waitMetrics(env *harness.Main, url string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := scrape(url, "go_goroutines"); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	env.Fatalf("controller metrics at %s did not answer", url)
}

// apiserverProfile and controllerProfile, when set, are where the CPU
// profiles of kube-apiserver and of vaultkms's controller during the first
// 10 s of the 1,000-VaultSecret sync are written.
var apiserverProfile, controllerProfile string

// vaultProfile, when set, is where Vault's CPU profile of the first 10 s
// of the 1,000-VaultSecret sync is written.
var vaultProfile string

// vaultPprofClient reaches Vault's pprof endpoint with the root token,
// trusting Vault's CA.
func vaultPprofClient(env *harness.Main, v *harness.Vault) *http.Client {
	vc := v.Client()
	hc := *vc.CloneConfig().HttpClient
	rt := hc.Transport
	hc.Transport = roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("X-Vault-Token", v.RootToken)
		return rt.RoundTrip(r)
	})
	hc.Timeout = 0
	return &hc
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// controllerHeapProfile, when set, is where the controller's heap profile
// is written once the managed VaultSecrets are all Ready.
var controllerHeapProfile string

// profileAPIServer writes kube-apiserver's CPU profile of the next d to path.
func profileAPIServer(env *harness.Main, cp *harness.ControlPlane, path string, d time.Duration) {
	hc, err := rest.HTTPClientFor(cp.Config)
	if err != nil {
		env.Fatalf("api server client: %v", err)
	}
	profile(env, hc, strings.TrimSuffix(cp.Config.Host, "/")+"/debug/pprof/profile", path, d)
}

func profile(env *harness.Main, hc *http.Client, url, path string, d time.Duration) {
	resp, err := hc.Get(fmt.Sprintf("%s?seconds=%d", url, int(d.Seconds())))
	if err != nil {
		env.Fatalf("profile %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		env.Fatalf("profile %s: %d %v", url, resp.StatusCode, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		env.Fatalf("%v", err)
	}
}
