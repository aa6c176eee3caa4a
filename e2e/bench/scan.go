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

// fill writes n secrets under /registry/secrets/.
func fill(ctx context.Context, cli *clientv3.Client, from, n int) error {
	body := make([]byte, 400)
	ids := []string{"vaultkms.v1::transit:kms:1:1764000000", "vaultkms.v1::transit:kms:2:1764100000"}
	const batch = 100 // etcd allows 128 operations per transaction
	for i := from; i < from+n; i += batch {
		var ops []clientv3.Op
		for j := i; j < min(i+batch, from+n); j++ {
			key := fmt.Sprintf("/registry/secrets/ns-%03d/secret-%07d", j%100, j)
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

// benchScan compares a verify scan with `etcdctl get --prefix` over the
// same keys, at two sizes so memory growth shows.
func benchScan(env *harness.Main, sizes []int) {
	url := harness.StartEtcd(env)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	if err != nil {
		env.Fatalf("etcd client: %v", err)
	}
	defer cli.Close()
	bin, _ := harness.BinDir()
	etcdctl := filepath.Join(bin, "etcdctl")
	verify := filepath.Join(env.TempDir(), "kubectl-vaultkms")
	if out, err := exec.Command("go", "build", "-o", verify, "github.com/vaultkms/vaultkms/cmd/kubectl-vaultkms").CombinedOutput(); err != nil {
		env.Fatalf("build kubectl-vaultkms: %v\n%s", err, out)
	}
	ctx := context.Background()
	fmt.Printf("\nScan of etcd: kubectl-vaultkms verify vs etcdctl get --prefix (same keys, same run)\n")
	fmt.Printf("%-9s %-22s %10s %12s %12s %8s\n", "secrets", "tool", "seconds", "objects/s", "peak RSS", "ratio")
	have := 0
	for _, n := range sizes {
		if err := fill(ctx, cli, have, n-have); err != nil {
			env.Fatalf("fill etcd: %v", err)
		}
		have = n
		var best [2]procRun
		for round := 0; round < 2; round++ {
			e, err := runProc(etcdctl, "--endpoints="+url, "get", "--prefix", "/registry/secrets/")
			if err != nil {
				env.Fatalf("%v", err)
			}
			s, err := runProc(verify, "verify", "--etcd-endpoints="+url, "--no-apiserver-metrics", "--fail-on=none",
				"--current-key-id=vaultkms.v1::transit:kms:2:1764100000", "-o", "json")
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
		for i, name := range []string{"etcdctl get --prefix", "kubectl-vaultkms verify"} {
			r := best[i]
			ratio := "1.00x"
			if i == 1 {
				ratio = fmt.Sprintf("%.2fx", r.elapsed.Seconds()/best[0].elapsed.Seconds())
			}
			fmt.Printf("%-9d %-22s %10.2f %12.0f %9.1f MiB %8s\n", n, name, r.elapsed.Seconds(), float64(n)/r.elapsed.Seconds(), float64(r.maxRSS)/1024, ratio)
		}
	}
	fmt.Printf("ratio = verify seconds ÷ etcdctl seconds (target ≤ 1.5x); best of two runs each\n")
}
