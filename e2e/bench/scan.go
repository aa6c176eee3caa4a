package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// fakeStoredSecret builds a value laid out as kube-apiserver stores a KMS
// v2 secret: the prefix, then an EncryptedObject with a realistic body.
func fakeStoredSecret(keyID string, body []byte) []byte {
	b := []byte("k8s:enc:kms:v2:vault:")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, body)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, keyID)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("vault:v1:0123456789012345678901234567890123456789012345678901234567890123456789"))
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	return b
}

// fill writes n values of about 600 bytes, 100 per transaction, spread
// over resources (round robin), numbered from from.
func fill(ctx context.Context, cli *clientv3.Client, resources []string, from, n int) error {
	body := make([]byte, 400)
	ids := []string{"vaultkms.v1::transit:kms:1:1764000000", "vaultkms.v1::transit:kms:2:1764100000"}
	if _, err := cli.Put(ctx, "/registry/namespaces/default", "k8s\x00namespace"); err != nil {
		return err
	}
	const batch = 100 // etcd allows 128 operations per transaction
	for i := from; i < from+n; i += batch {
		var ops []clientv3.Op
		for j := i; j < min(i+batch, from+n); j++ {
			key := fmt.Sprintf("/registry/%s/ns-%03d/obj-%07d", resources[j%len(resources)], j%100, j)
			ops = append(ops, clientv3.OpPut(key, string(fakeStoredSecret(ids[j%2], body))))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return err
		}
	}
	return nil
}

type procRun struct {
	elapsed time.Duration
	maxRSS  int64 // KiB
}

func runProc(name string, args ...string) (procRun, error) {
	cmd := exec.Command(name, args...)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return procRun{}, err
	}
	defer devnull.Close()
	cmd.Stdout, cmd.Stderr = devnull, os.Stderr
	start := time.Now()
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
		err = nil // verify reports stale objects: expected here
	}
	if err != nil {
		return procRun{}, fmt.Errorf("%s: %w", filepath.Base(name), err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return procRun{elapsed: time.Since(start), maxRSS: ru.Maxrss}, nil
}

// tenResources are built-in resources whose etcd path is their name.
var tenResources = []string{"secrets", "configmaps", "serviceaccounts", "pods", "deployments", "replicasets", "jobs", "leases", "roles", "rolebindings"}

// benchScan compares a verify scan with `etcdctl get --prefix` over the
// same keys, run exactly as an operator would (output to /dev/null), best
// of three each, interleaved: Secrets alone at each size, then the whole
// prefix with the objects spread over ten resources.
func benchScan(env *harness.Main, sizes []int) {
	bin, _ := harness.BinDir()
	etcdctl := filepath.Join(bin, "etcdctl")
	verify := filepath.Join(env.TempDir(), "kubectl-vaultkms")
	if out, err := exec.Command("go", "build", "-o", verify, "github.com/vaultkms/vaultkms/cmd/kubectl-vaultkms").CombinedOutput(); err != nil {
		env.Fatalf("build kubectl-vaultkms: %v\n%s", err, out)
	}
	ctx := context.Background()
	fmt.Printf("\nScan of etcd: kubectl-vaultkms verify vs etcdctl get --prefix (same keys, same run, output to /dev/null)\n")
	fmt.Printf("%-9s %-10s %-32s %10s %12s %12s %8s\n", "objects", "layout", "tool", "seconds", "objects/s", "peak RSS", "ratio")
	layouts := []struct {
		name      string
		resources []string
		etcdctl   string
		verify    []string
	}{
		{"secrets", []string{"secrets"}, "/registry/secrets/", []string{"--resources=secrets"}},
		{"10 res.", tenResources, "/registry/", []string{"--whole-prefix"}},
	}
	for _, l := range layouts {
		url := harness.StartEtcd(env)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
		if err != nil {
			env.Fatalf("etcd client: %v", err)
		}
		have := 0
		for _, n := range sizes {
			if err := fill(ctx, cli, l.resources, have, n-have); err != nil {
				env.Fatalf("fill etcd: %v", err)
			}
			have = n
			var best [2]procRun
			for round := 0; round < 3; round++ {
				e, err := runProc(etcdctl, "--endpoints="+url, "get", "--prefix", l.etcdctl)
				if err != nil {
					env.Fatalf("%v", err)
				}
				args := append([]string{"verify", "--etcd-endpoints=" + url, "--no-apiserver-metrics", "--fail-on=none",
					"--current-key-id=vaultkms.v1::transit:kms:2:1764100000", "-o", "json"}, l.verify...)
				s, err := runProc(verify, args...)
				if err != nil {
					env.Fatalf("%v", err)
				}
				if round == 0 || e.elapsed < best[0].elapsed {
					best[0] = e
				}
				if round == 0 || s.elapsed < best[1].elapsed {
					best[1] = s
				}
			}
			for i, name := range []string{"etcdctl get --prefix " + l.etcdctl, "kubectl-vaultkms verify"} {
				r := best[i]
				ratio := "1.00x"
				if i == 1 {
					ratio = fmt.Sprintf("%.2fx", r.elapsed.Seconds()/best[0].elapsed.Seconds())
				}
				fmt.Printf("%-9d %-10s %-32s %10.2f %12.0f %9.1f MiB %8s\n", n, l.name, name, r.elapsed.Seconds(), float64(n)/r.elapsed.Seconds(), float64(r.maxRSS)/1024, ratio)
			}
		}
		cli.Close()
	}
	fmt.Printf("ratio = verify seconds ÷ etcdctl seconds (target ≤ 1.0x within 64 MiB); best of three runs each\n")
}
