package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/vaultkms/vaultkms/verifier/scan"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

func runVerify(ctx context.Context, ios streams, args []string) error {
	c := newCommon("verify", ios)
	failOn := c.fs.String("fail-on", "stale", "exit 3 when the scan finds: stale (includes plaintext), plaintext, or none")
	c.fs.BoolVar(&c.wholePrefix, "whole-prefix", false, "scan every key under --etcd-prefix, whatever its resource (the scan trim relies on)")
	if err := c.parse(args); err != nil {
		return err
	}
	switch *failOn {
	case "stale", "plaintext", "none":
	default:
		return usageErr("--fail-on %q: use stale, plaintext or none", *failOn)
	}
	keyID, _, _, err := c.currentKey(ctx)
	if err != nil {
		return err
	}
	rep, err := c.scan(ctx, keyID, nil, nil)
	if err != nil {
		return err
	}
	if err := emit(ios.Out, c.output, rep, func(w io.Writer) { reportTable(w, rep) }); err != nil {
		return err
	}
	if err := c.noEvidence(rep); err != nil {
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

// noEvidence refuses a scan that found nothing, unless the operator said
// that is expected.
func (c *common) noEvidence(rep scan.Report) error {
	if rep.Total() == 0 && !c.allowNoEvidence {
		return refused("the scan found no objects under %s at revision %d: that is no evidence of encryption; check --etcd-endpoints, --etcd-prefix and --resources (or pass --allow-no-evidence)", rep.Prefix, rep.Revision)
	}
	return nil
}

// scan checks the prefix, resolves the resources to their etcd paths and
// scans them at one revision. onRestart is told when compaction restarts
// the scan (everything visit saw will be seen again).
func (c *common) scan(ctx context.Context, keyID string, visit func(string, []byte, storedvalue.Value, bool), onRestart func()) (scan.Report, error) {
	var names []scan.Resource
	var wild []string
	var err error
	if !c.wholePrefix {
		if names, wild, err = c.resourceNames(); err != nil {
			return scan.Report{}, err
		}
	}
	cli, err := c.dialEtcd(ctx)
	if err != nil {
		return scan.Report{}, err
	}
	defer cli.Close()
	if err := scan.CheckPrefix(ctx, cli, c.etcd.Prefix); err != nil && !c.allowNoEvidence {
		return scan.Report{}, refused("%v", err)
	}
	var targets []scan.Target
	if !c.wholePrefix {
		if targets, err = scan.Resolve(ctx, cli, c.etcd.Prefix, names); err != nil {
			return scan.Report{}, usageErr("%v", err)
		}
	}
	for _, w := range wild {
		c.warnf("the EncryptionConfiguration entry %q is a wildcard and was not scanned: name its resources with --resources", w)
	}
	p := newProgress(c.ios.ErrOut, "scanning", 0)
	o := scan.Options{Prefix: c.etcd.Prefix, Targets: targets, Provider: c.scope.Provider, CurrentKeyID: keyID, Visit: visit,
		Progress: func(res string, n int) { p.set("scanning "+res, n) },
		OnRestart: func(rev int64) {
			p.done()
			fmt.Fprintf(c.ios.ErrOut, "etcd compacted revision %d during the scan; starting over at a newer revision\n", rev)
			if onRestart != nil {
				onRestart()
			}
		}}
	rep, err := scan.Run(ctx, cli, o)
	p.done()
	rep.NotScanned = wild
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
	for _, n := range rep.NotScanned {
		fmt.Fprintf(w, "%s\tnot scanned (wildcard)\n", n)
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
