// Command bench measures the plugin against a direct Transit client in the
// same run, against a real Vault, and prints throughput ratios and
// latencies. `make bench` runs it.
package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	kmsapi "k8s.io/kms/apis/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

type result struct {
	ops       int
	elapsed   time.Duration
	latencies []time.Duration
}

func (r result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// run calls op from workers goroutines for d and collects latencies.
func run(workers int, d time.Duration, op func() error) (result, error) {
	var mu sync.Mutex
	var res result
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lats []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := op(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lats...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(res.latencies)
	return res, firstErr
}

func merge(a, b result) result {
	return result{ops: a.ops + b.ops, elapsed: a.elapsed + b.elapsed, latencies: append(slices.Clone(a.latencies), b.latencies...)}
}

func main() {
	dur := flag.Duration("duration", 3*time.Second, "length of each measured run (each mode runs twice, interleaved)")
	workers := flag.Int("workers", 8, "concurrent callers")
	only := flag.String("only", "", "run one part: plugin, kvreads, scan, reencrypt, kmscost or controller")
	kmsCostN := flag.Int("kmscost-secrets", 10000, "Secrets created per encryption mode in the kmscost part")
	kmsCostSeeds := flag.Int("kmscost-seeds", 20, "API server starts (so DEK seeds under KMS) before the kmscost part's cold restart")
	vaultSecrets := flag.Int("vaultsecrets", 1000, "kv VaultSecrets created at once")
	unmanaged := flag.Int("unmanaged", 10000, "unmanaged Secrets for the controller memory comparison")
	managed := flag.Int("managed", 10000, "managed VaultSecrets for the controller memory figure (0: skip)")
	scanSizes := flag.String("scan-sizes", "10000,100000", "numbers of secrets to scan, comma separated")
	reencryptN := flag.Int("reencrypt", 10000, "stale secrets to re-encrypt")
	inflight := flag.Int("inflight", 0, "plugin's concurrent Transit requests per operation (0: its default)")
	pluginProcess := flag.Bool("plugin-process", false, "run the plugin as its own process (the vaultkms-plugin binary, as users run it) instead of inside the bench")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile (the in-process plugin and the callers) to this file")
	othersFlag := flag.String("others", "vso,eso,eso-cache", "controllers measured beside vaultkms's (built by `make bench-tools`): vso, eso, eso-cache, comma separated; empty for none")
	flag.StringVar(&apiserverProfile, "apiserver-cpuprofile", "", "write kube-apiserver's CPU profile of the first 10 s of the 1,000-VaultSecret sync to this file, and of the last floor pass's first 5 s to this file with .floor appended")
	flag.StringVar(&controllerHeapProfile, "controller-heapprofile", "", "write vaultkms-controller's heap profile to this file once the -managed VaultSecrets are all Ready")
	flag.StringVar(&vaultProfile, "vault-cpuprofile", "", "write Vault's CPU profile of the first 10 s of the 1,000-VaultSecret sync to this file")
	flag.StringVar(&controllerProfile, "controller-cpuprofile", "", "write vaultkms-controller's CPU profile of the first 10 s of the 1,000-VaultSecret sync to this file")
	flag.BoolVar(&vaultDefaultPolicy, "vault-default-policy", false, "give the tenants' Vault tokens Vault's default policy (the roles set token_no_default_policy otherwise, as docs/install-chart.md advises)")
	flag.IntVar(&benchSources, "sources", benchSources, "kv sources of each VaultSecret in the controller part: 1 is one path with an inline login; more share one VaultAuth (spec.sources, spec.authRef)")
	flag.IntVar(&reconcilers, "reconcilers", reconcilers, "concurrent reconciles of every controller in the controller part")
	flag.Parse()
	// The bench's own API clients log nothing.
	ctrllog.SetLogger(logr.Discard())

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	env := &harness.Main{Quiet: true}
	defer env.Close()
	env.StopOnSignal()
	if *only == "" || *only == "plugin" {
		benchPlugin(env, *dur, *workers, *inflight, *pluginProcess)
	}
	if *only == "" || *only == "kvreads" {
		benchKVReads(env, 8000, 5)
	}
	if *only == "" || *only == "scan" {
		var sizes []int
		for _, f := range strings.Split(*scanSizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				env.Fatalf("-scan-sizes: %v", err)
			}
			sizes = append(sizes, n)
		}
		benchScan(env, sizes)
	}
	if *only == "" || *only == "reencrypt" {
		benchReencrypt(env, *reencryptN)
	}
	if *only == "" || *only == "kmscost" {
		benchKMSCost(env, *kmsCostN, *kmsCostSeeds)
	}
	if *only == "" || *only == "controller" {
		var measure []other
		for _, k := range strings.Split(*othersFlag, ",") {
			if k = strings.TrimSpace(k); k == "" {
				continue
			}
			i := slices.IndexFunc(others(), func(o other) bool { return o.key == k })
			if i < 0 {
				env.Fatalf("-others: unknown controller %q (vso, eso, eso-cache)", k)
			}
			measure = append(measure, others()[i])
		}
		benchController(env, *vaultSecrets, *unmanaged, *managed, measure)
	}
}

func benchPlugin(env *harness.Main, d time.Duration, w, inflight int, process bool) {
	dur, workers := &d, &w
	v := harness.StartVault(env)
	v.TransitKey("transit", "kms")
	var kms kmsapi.KeyManagementServiceClient
	where := "inside the bench's process"
	if process {
		kms, where = startPluginProcess(env, v, "kms", inflight)
	} else {
		p := harness.StartPlugin(env, v, harness.PluginOptions{Key: "kms", MaxInFlight: inflight})
		p.WaitKeyID(env, 20*time.Second)
		kms = p.Client(env)
	}
	direct := v.Client()
	ctx := context.Background()
	seed := make([]byte, 32)
	seedB64 := base64.StdEncoding.EncodeToString(seed)

	wrapped, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: seed})
	if err != nil {
		env.Fatalf("encrypt: %v", err)
	}
	// directProven does by hand what the plugin does for every Encrypt:
	// wrap, then decrypt the wrapped seed and compare it with the seed. It
	// is the same Vault work as the plugin's, so the plugin's own cost
	// (gRPC hop, batching, net/http) shows against it.
	directProven := func() error {
		s, err := direct.Logical().WriteWithContext(ctx, "transit/encrypt/kms", map[string]any{"plaintext": seedB64})
		if err != nil {
			return err
		}
		ct, _ := s.Data["ciphertext"].(string)
		d, err := direct.Logical().WriteWithContext(ctx, "transit/decrypt/kms", map[string]any{"ciphertext": ct})
		if err != nil {
			return err
		}
		if pt, _ := d.Data["plaintext"].(string); pt != seedB64 {
			return fmt.Errorf("the wrapped seed decrypts to another value")
		}
		return nil
	}
	ops := []struct {
		name           string
		direct, plugin func() error
		// proven, when set, is a direct baseline doing the same Vault
		// work as the plugin.
		proven func() error
	}{
		{"encrypt",
			func() error {
				_, err := direct.Logical().WriteWithContext(ctx, "transit/encrypt/kms", map[string]any{"plaintext": seedB64})
				return err
			},
			func() error { _, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: seed}); return err },
			directProven},
		{"decrypt",
			func() error {
				_, err := direct.Logical().WriteWithContext(ctx, "transit/decrypt/kms", map[string]any{"ciphertext": string(wrapped.Ciphertext)})
				return err
			},
			func() error {
				_, err := kms.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: wrapped.Ciphertext, KeyId: wrapped.KeyId})
				return err
			},
			nil},
	}

	fmt.Printf("vaultkms plugin (%s) vs direct single-call Transit client, real Vault on this machine\n", where)
	fmt.Printf("%d runs of %s per mode, interleaved\n\n", 2, *dur)
	fmt.Printf("%-8s %-8s %12s %10s %10s %10s %8s %10s\n", "op", "callers", "mode", "ops/s", "p50", "p99", "ratio", "p50 over")
	for _, op := range ops {
		for _, w := range []int{1, *workers} {
			// Warm every path, then interleave so drift hits them alike.
			run(w, 200*time.Millisecond, op.direct)
			if op.proven != nil {
				run(w, 200*time.Millisecond, op.proven)
			}
			run(w, 200*time.Millisecond, op.plugin)
			var d, dp, pl result
			for range 2 {
				r, err := run(w, *dur, op.direct)
				if err != nil {
					env.Fatalf("direct %s: %v", op.name, err)
				}
				d = merge(d, r)
				if op.proven != nil {
					r, err = run(w, *dur, op.proven)
					if err != nil {
						env.Fatalf("direct+proof %s: %v", op.name, err)
					}
					dp = merge(dp, r)
				}
				r, err = run(w, *dur, op.plugin)
				if err != nil {
					env.Fatalf("plugin %s: %v", op.name, err)
				}
				pl = merge(pl, r)
			}
			fmt.Printf("%-8s %-8d %12s %10.0f %10s %10s %8s %10s\n", op.name, w, "direct", d.rate(), d.pct(0.5).Round(time.Microsecond), d.pct(0.99).Round(time.Microsecond), "1.00x", "")
			if op.proven != nil {
				fmt.Printf("%-8s %-8d %12s %10.0f %10s %10s %7.2fx %10s\n", op.name, w, "direct+proof", dp.rate(), dp.pct(0.5).Round(time.Microsecond), dp.pct(0.99).Round(time.Microsecond), dp.rate()/d.rate(),
					(dp.pct(0.5) - d.pct(0.5)).Round(time.Microsecond))
			}
			fmt.Printf("%-8s %-8d %12s %10.0f %10s %10s %7.2fx %10s\n", op.name, w, "plugin", pl.rate(), pl.pct(0.5).Round(time.Microsecond), pl.pct(0.99).Round(time.Microsecond), pl.rate()/d.rate(),
				(pl.pct(0.5) - d.pct(0.5)).Round(time.Microsecond))
			if op.proven != nil {
				fmt.Printf("%-8s %-8d %12s %10s %10s %10s %7.2fx %10s\n", op.name, w, "  vs +proof", "", "", "", pl.rate()/dp.rate(),
					(pl.pct(0.5) - dp.pct(0.5)).Round(time.Microsecond))
			}
		}
	}
	fmt.Printf("\nratio = ops/s ÷ direct ops/s in the same run; p50 over = p50 − direct p50\n")
	fmt.Printf("direct+proof = a direct client that also decrypts the wrapped seed and compares it, the plugin's Vault work per Encrypt;\n")
	fmt.Printf("\"vs +proof\" = plugin against direct+proof\n")
	fmt.Printf("targets: ratio ≥ 1.00x with %d callers; p50 over ≤ 350µs for a lone caller\n", *workers)
}
