package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vaultkms/vaultkms/verifier/scan"
)

func runVerify(ctx context.Context, args []string) error {
	c := newCommon("verify")
	failOn := c.fs.String("fail-on", "stale", "exit 3 when the scan finds: stale (includes plaintext), plaintext, or none")
	if err := c.parse(args); err != nil {
		return err
	}
	switch *failOn {
	case "stale", "plaintext", "none":
	default:
		return usageErr("--fail-on %q: use stale, plaintext or none", *failOn)
	}
	rep, err := doScan(ctx, c)
	if err != nil {
		return err
	}
	if err := emit(os.Stdout, c.output, rep, func(w io.Writer) { reportTable(w, rep) }); err != nil {
		return err
	}
	switch {
	case *failOn == "stale" && rep.Stale() > 0:
		return &exitErr{code: exitFinding, err: fmt.Errorf("%d stale objects", rep.Stale())}
	case *failOn == "plaintext" && rep.Plaintext() > 0:
		return &exitErr{code: exitFinding, err: fmt.Errorf("%d plaintext objects", rep.Plaintext())}
	}
	return nil
}

// doScan finds the current key_id and scans etcd.
func doScan(ctx context.Context, c *common) (scan.Report, error) {
	keyID, _, _, err := c.currentKey(ctx)
	if err != nil {
		return scan.Report{}, err
	}
	return scanWith(ctx, c, keyID, nil)
}

func scanWith(ctx context.Context, c *common, keyID string, opts *scan.Options) (scan.Report, error) {
	o, err := c.scanOptions()
	if err != nil {
		return scan.Report{}, err
	}
	if opts != nil {
		o.Visit = opts.Visit
	}
	o.CurrentKeyID = keyID
	cli, err := c.etcd()
	if err != nil {
		return scan.Report{}, err
	}
	defer cli.Close()
	p := newProgress("scanning", 0)
	o.Progress = func(res string, n int) { p.set("scanning "+res, n) }
	o.OnRestart = func(rev int64) {
		p.done()
		fmt.Fprintf(os.Stderr, "etcd compacted revision %d during the scan; starting over at a newer revision\n", rev)
	}
	rep, err := scan.Run(ctx, cli, o)
	p.done()
	return rep, err
}

func reportTable(w io.Writer, rep scan.Report) {
	fmt.Fprintf(w, "current key_id:\t%s\n", rep.CurrentKeyID)
	fmt.Fprintf(w, "etcd revision:\t%d\n", rep.Revision)
	fmt.Fprintf(w, "scanned at:\t%s\n\n", rep.ScannedAt.Format("2006-01-02T15:04:05Z"))
	fmt.Fprintf(w, "RESOURCE\tTOTAL\tCURRENT\tSTALE\tPLAINTEXT\tPROVIDERS\n")
	for _, r := range rep.Resources {
		var prov []string
		for _, k := range scan.SortedKeys(r.ByProvider) {
			prov = append(prov, fmt.Sprintf("%s=%d", k, r.ByProvider[k]))
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\n", r.Resource, r.Total, r.Current, r.Stale, r.Plaintext, strings.Join(prov, " "))
	}
	fmt.Fprintf(w, "\nKEY_ID\tRESOURCE\tOBJECTS\n")
	for _, r := range rep.Resources {
		for _, k := range scan.SortedKeys(r.ByKeyID) {
			mark := ""
			if k == rep.CurrentKeyID {
				mark = " (current)"
			}
			fmt.Fprintf(w, "%s%s\t%s\t%d\n", k, mark, r.Resource, r.ByKeyID[k])
		}
	}
}
