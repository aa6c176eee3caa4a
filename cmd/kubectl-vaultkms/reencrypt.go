package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/vaultkms/vaultkms/verifier/rewrite"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

type reencryptReport struct {
	Resources []reencryptResource `json:"resources"`
	After     *scan.Report        `json:"after,omitempty"`
	// NotScanned names configured resources that were not covered.
	NotScanned []string `json:"notScanned,omitempty"`
}

type reencryptResource struct {
	Resource string `json:"resource"`
	Stale    int    `json:"stale"`
	rewrite.Result
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
	stale := rewrite.NewStaleSet(c.etcdPrefix)
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
	// Each object costs a read and a write; --qps is the pacing, so the
	// client's own limiter (5 requests/s by default) must not be.
	cfg.QPS = float32(max(2**qps+10, 20))
	cfg.Burst = int(cfg.QPS)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	limiter := rate.NewLimiter(rate.Limit(*qps), 1)
	var out reencryptReport
	start := time.Now()
	for _, r := range rep.Resources {
		res := scan.Resource(r.Resource)
		objs := stale.Objects(r.Resource)
		rr := reencryptResource{Resource: string(res), Stale: len(objs)}
		if len(objs) > 0 {
			gvr, err := resolve(mapper, res)
			if err != nil {
				return err
			}
			p := newProgress(ios.ErrOut, "reencrypt "+string(res), len(objs))
			rw := &rewrite.Rewriter{Client: dyn, Resource: gvr, Limiter: limiter, Workers: *workers, Progress: func(n int) { p.set("", n) }}
			rr.Result, err = rw.Run(ctx, objs)
			p.done()
			if err != nil {
				return fmt.Errorf("reencrypt %s interrupted after %d objects (run again to resume): %w", res, rr.Rewritten, err)
			}
		}
		out.Resources = append(out.Resources, rr)
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

// resolve maps "secrets" or "widgets.example.com" to the served version.
func resolve(m *restmapper.DeferredDiscoveryRESTMapper, res scan.Resource) (schema.GroupVersionResource, error) {
	gr := schema.ParseGroupResource(string(res))
	gvr, err := m.ResourceFor(gr.WithVersion(""))
	if err != nil {
		return schema.GroupVersionResource{}, fmt.Errorf("resource %q is not served by the API server: %w", res, err)
	}
	return gvr, nil
}
