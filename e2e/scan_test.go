package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// TestScanSurvivesCompaction compacts a real etcd under a running scan:
// the scan must start over at a newer revision, say so, and count what
// that revision holds.
func TestScanSurvivesCompaction(t *testing.T) {
	t.Parallel()
	url := harness.StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	for i := range 1000 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/secrets/ns/s-%04d", i), "k8s\x00plain"); err != nil {
			t.Fatal(err)
		}
	}
	pages, restarts := 0, 0
	var compactedAt int64
	rep, err := scan.Run(ctx, cli, scan.Options{
		Resources: []scan.Resource{"secrets"}, PageSize: 100,
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
		OnRestart: func(int64) { restarts++ },
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
}
