package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/verifier/rewrite"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

func etcdClient(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestScanSurvivesCompaction compacts a real etcd under a running scan:
// the scan must start over at a newer revision, say so, and count what
// that revision holds; the reencrypt work list must hold each stale object
// once, not once per attempt.
func TestScanSurvivesCompaction(t *testing.T) {
	t.Parallel()
	cli := etcdClient(t, harness.StartEtcd(t))
	ctx := context.Background()
	for i := range 1000 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/secrets/ns/s-%04d", i), "k8s\x00plain"); err != nil {
			t.Fatal(err)
		}
	}
	pages, restarts := 0, 0
	var compactedAt int64
	stale := rewrite.NewStaleSet("/registry")
	rep, err := scan.Run(ctx, cli, scan.Options{
		Targets: []scan.Target{{Resource: "secrets", KeyPrefix: "/registry/secrets/"}}, KeysPerPage: 100,
		Visit: stale.Visit,
		Progress: func(string, int) {
			pages++
			if pages != 1 {
				return
			}
			// After the first page: write once more and compact
			// everything up to now, including the scan's revision.
			r, err := cli.Put(ctx, "/registry/secrets/ns/s-late", "k8s\x00plain")
			if err != nil {
				t.Error(err)
				return
			}
			compactedAt = r.Header.Revision
			if _, err := cli.Compact(ctx, compactedAt); err != nil {
				t.Error(err)
			}
		},
		OnRestart: func(int64) { restarts++; stale.Reset() },
	})
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	if restarts != 1 || rep.Restarts != 1 {
		t.Fatalf("restarts %d (report %d), want 1", restarts, rep.Restarts)
	}
	if rep.Revision < compactedAt || rep.Resources[0].Total != 1001 || rep.Resources[0].Plaintext != 1001 {
		t.Fatalf("after restart: revision %d (compacted at %d), total %d", rep.Revision, compactedAt, rep.Resources[0].Total)
	}
	objs := stale.Objects("secrets")
	names := map[string]bool{}
	for _, o := range objs {
		names[o.Name] = true
	}
	if len(objs) != 1001 || len(names) != 1001 {
		t.Fatalf("reencrypt would rewrite %d objects (%d distinct), want 1001 once each", len(objs), len(names))
	}
}

// recordingKV remembers the size of each response, to check page bounds.
type recordingKV struct {
	scan.KV
	mu        sync.Mutex
	maxBytes  int
	maxKeys   int
	valueGets int
}

func (r *recordingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := r.KV.Get(ctx, key, opts...)
	if err != nil {
		return resp, err
	}
	n := 0
	for _, kv := range resp.Kvs {
		n += len(kv.Value)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n > 0 {
		r.valueGets++
	}
	r.maxBytes, r.maxKeys = max(r.maxBytes, n), max(r.maxKeys, len(resp.Kvs))
	return resp, err
}

// TestScanPagesBoundedByBytes: values of 1000 bytes with a 20,000-byte
// page bound are read at most 20 at a time, and keys at most KeysPerPage
// at a time, however many there are.
func TestScanPagesBoundedByBytes(t *testing.T) {
	t.Parallel()
	cli := etcdClient(t, harness.StartEtcd(t))
	ctx := context.Background()
	value := "k8s\x00" + strings.Repeat("x", 996)
	for i := 0; i < 600; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/configmaps/ns/c-%04d", j), value))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	kv := &recordingKV{KV: cli}
	rep, err := scan.Run(ctx, kv, scan.Options{Targets: []scan.Target{{Resource: "configmaps", KeyPrefix: "/registry/configmaps/"}}, PageBytes: 20000, KeysPerPage: 250})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Total() != 600 || kv.maxBytes > 20000 || kv.maxKeys > 251 || kv.valueGets < 600/20 {
		t.Fatalf("total %d, largest page %d bytes, %d keys, %d value reads", rep.Total(), kv.maxBytes, kv.maxKeys, kv.valueGets)
	}
}
