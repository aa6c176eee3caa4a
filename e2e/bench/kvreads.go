package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// benchKVReads compares the CPU a KV read costs Vault and the client over
// vaultkms's client (net/http, HTTP/1.1 only: the choice it measures) and
// over the api package's default client (net/http with HTTP/2). Both run
// in turns on one Vault, n reads from writers goroutines each time.
func benchKVReads(env *harness.Main, n, rounds int) {
	v := harness.StartVault(env)
	v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "p"}})
	pid := processWith(env, v.Dir)
	c, err := vault.NewClient(vault.Config{Address: v.Addr, CACert: v.CA.CertFile})
	if err != nil {
		env.Fatalf("vault client: %v", err)
	}
	c.SetToken(v.RootToken)
	h2 := v.Client()
	type cost struct{ vault, client float64 }
	read := func(http1 bool) cost {
		client := h2
		if http1 {
			client = c
		}
		v0, c0 := cpuSeconds(env, pid), selfCPUSeconds()
		err := inParallel(0, n, func(int) error {
			_, err := client.Logical().ReadWithDataWithContext(context.Background(), "secret/data/app/config", nil)
			return err
		})
		if err != nil {
			env.Fatalf("kv read: %v", err)
		}
		per := func(s float64) float64 { return s / float64(n) * 1e6 }
		return cost{vault: per(cpuSeconds(env, pid) - v0), client: per(selfCPUSeconds() - c0)}
	}
	read(false) // warm both paths and Vault's caches
	read(true)
	fmt.Printf("\nKV reads, %d per run from %d goroutines, CPU per read (µs)\n", n, writers)
	fmt.Printf("  %3s  %12s  %12s  %13s  %13s  %s\n", "run", "vault HTTP/2", "vault HTTP/1", "client HTTP/2", "client HTTP/1", "vault HTTP/1 / HTTP/2")
	var sumH, sumI float64
	for r := range rounds {
		h, i := read(false), read(true)
		sumH, sumI = sumH+h.vault, sumI+i.vault
		fmt.Printf("  %3d  %12.0f  %12.0f  %13.0f  %13.0f  %.2fx\n", r+1, h.vault, i.vault, h.client, i.client, i.vault/h.vault)
	}
	fmt.Printf("  all runs: Vault's CPU per read over HTTP/1.1 is %.2fx that over HTTP/2\n", sumI/sumH)
}

// processWith returns the pid of the process whose command line holds s.
func processWith(env *harness.Main, s string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		env.Fatalf("read /proc: %v", err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(b), s) {
			return pid
		}
	}
	env.Fatalf("no process with %q in its command line", s)
	return 0
}

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(env *harness.Main, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		env.Fatalf("read CPU time: %v", err)
	}
	// Fields after the command name, which may hold spaces: utime and
	// stime are the 12th and 13th.
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ is 100 on Linux
}

func selfCPUSeconds() float64 {
	var r syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e9
}
