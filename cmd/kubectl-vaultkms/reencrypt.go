package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/time/rate"

	"github.com/vaultkms/vaultkms/verifier/rewrite"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

type reencryptReport struct {
	Resources []rewrite.ResourceResult `json:"resources"`
	After     *scan.Report             `json:"after,omitempty"`
	// NotScanned names configured resources that were not covered.
	NotScanned []string `json:"notScanned,omitempty"`
}

func runReencrypt(ctx context.Context, ios streams, args []string) error {
	c := newCommon("reencrypt", ios)
	qps := c.fs.Float64("qps", 50, "writes per second through the API server")
	workers := c.fs.Int("workers", 4, "objects rewritten at once")
	if err := c.parse(args); err != nil {
		return err
	}
	if *qps <= 0 || *workers <= 0 {
		return usageErr("--qps and --workers must be positive")
	}
	keyID, _, _, err := c.currentKey(ctx)
	if err != nil {
		return err
	}
	// The scan finds what is stale now; objects rewritten by an earlier,
	// interrupted run are current and skipped, which makes a rerun resume.
	// A compaction restarts the scan: the set starts over with it, so no
	// object is queued twice.
	stale := rewrite.NewStaleSet(c.etcd.Prefix)
	rep, err := c.scan(ctx, keyID, stale.Visit, stale.Reset)
	if err != nil {
		return err
	}
	if err := stale.Err(); err != nil {
		return err
	}
	if err := c.noEvidence(rep); err != nil {
		return err
	}
	cfg, err := c.restConfig()
	if err != nil {
		return err
	}
	dyn, mapper, err := rewrite.Clients(cfg, *qps)
	if err != nil {
		return err
	}
	var out reencryptReport
	var names []string
	for _, r := range rep.Resources {
		names = append(names, r.Resource)
	}
	var p *progress
	start := time.Now()
	out.Resources, err = rewrite.Stale(ctx, rewrite.Config{Client: dyn, Mapper: mapper, Limiter: rate.NewLimiter(rate.Limit(*qps), 1), Workers: *workers,
		Progress: func(res string, n int) func(int) {
			if p != nil {
				p.done()
			}
			p = newProgress(ios.ErrOut, "reencrypt "+res, n)
			return func(done int) { p.set("", done) }
		}}, names, stale)
	if p != nil {
		p.done()
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	after, err := c.scan(ctx, keyID, nil, nil)
	if err != nil {
		return err
	}
	out.After = &after
	out.NotScanned = rep.NotScanned
	err = emit(ios.Out, c.output, out, func(w io.Writer) {
		fmt.Fprintf(w, "RESOURCE\tSTALE\tREWRITTEN\tGONE\tFAILED\n")
		for _, r := range out.Resources {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\n", r.Resource, r.Stale, r.Rewritten, r.Gone, r.Failed)
			for _, e := range r.Errors {
				fmt.Fprintf(w, "  error: %s\n", e)
			}
		}
		fmt.Fprintf(w, "took %s\n", elapsed.Round(time.Millisecond))
		if out.After != nil {
			fmt.Fprintf(w, "after: %d stale, %d plaintext at revision %d\n", out.After.Stale(), out.After.Plaintext(), out.After.Revision)
		}
	})
	if err != nil {
		return err
	}
	for _, r := range out.Resources {
		if r.Failed > 0 {
			return fmt.Errorf("%d objects of %s could not be rewritten", r.Failed, r.Resource)
		}
	}
	if out.After != nil && out.After.Stale() > 0 {
		return &exitErr{code: exitFinding, err: fmt.Errorf("%d objects still stale after reencrypt", out.After.Stale())}
	}
	return nil
}
