package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/encconfig"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rotation"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

type statusReport struct {
	Encrypted bool `json:"encrypted"`
	// Config is what --encryption-config says per resource.
	Config           []encconfig.Resource     `json:"encryptionConfig,omitempty"`
	CurrentKeyID     string                   `json:"currentKeyID"`
	KeyIDSource      string                   `json:"keyIDSource"`
	KeyVersion       int                      `json:"keyVersion"`
	KeyVersionAge    string                   `json:"keyVersionAge,omitempty"`
	MinDecryption    int                      `json:"minDecryptionVersion,omitempty"`
	APIServers       []keysource.APIServerKey `json:"apiServers"`
	APIServersAgree  *bool                    `json:"apiServersAgree,omitempty"`
	ObjectsByVersion map[int]int              `json:"objectsByVersion"`
	Plaintext        int                      `json:"plaintext"`
	Stale            int                      `json:"stale"`
	Decision         rotation.Decision        `json:"rotation"`
	Scan             scan.Report              `json:"scan"`
}

func runStatus(ctx context.Context, ios streams, args []string) error {
	c := newCommon("status", ios)
	if err := c.parse(args); err != nil {
		return err
	}
	keyID, source, tk, err := c.currentKey(ctx)
	if err != nil {
		return err
	}
	cur, err := transitkey.ParseKeyID(keyID)
	if err != nil {
		return fmt.Errorf("current key_id: %w", err)
	}
	rep, err := c.scan(ctx, keyID, nil, nil)
	if err != nil {
		return err
	}
	st := statusReport{CurrentKeyID: keyID, KeyIDSource: source, KeyVersion: cur.Version, Scan: rep,
		Plaintext: rep.Plaintext(), Stale: rep.Stale(), ObjectsByVersion: map[int]int{}}
	st.KeyVersionAge = time.Since(cur.Created).Round(time.Second).String()
	facts := rotation.Facts{CurrentKeyID: keyID, Scanned: rep.Total(), Plaintext: st.Plaintext, Stale: st.Stale, ByKeyID: rep.ByKeyID()}
	if c.allowNoEvidence && facts.Scanned == 0 {
		facts.Scanned = -1 // the operator accepts an empty scan
	}
	for _, vn := range rotation.VersionCounts(facts.ByKeyID, cur) {
		st.ObjectsByVersion[vn[0]] = vn[1]
	}
	if tk != nil {
		st.MinDecryption = max(1, tk.MinDecryption)
		facts.MinDecryptionVersion = st.MinDecryption
	}
	keys, err := c.apiServerKeys(ctx)
	if err != nil {
		c.warnf("cannot read API server metrics: %v", err)
	} else if len(keys) > 0 {
		for _, k := range keys {
			if c.scope.Provider == "" || k.Provider == c.scope.Provider {
				st.APIServers = append(st.APIServers, k)
			}
		}
		agree, _ := keysource.Agreement(keys, c.scope.Provider, keyID)
		st.APIServersAgree = &agree
		facts.APIServersKnown, facts.APIServersAgree = true, agree
	}
	st.Encrypted = st.Plaintext == 0 && rep.Total() > 0
	if c.scope.EncryptionConfig != "" {
		var names []string
		for _, r := range rep.Resources {
			names = append(names, r.Resource)
		}
		if st.Config, err = encconfig.Check(c.scope.EncryptionConfig, c.scope.Provider, names); err != nil {
			return err
		}
		for _, r := range st.Config {
			st.Encrypted = st.Encrypted && r.Encrypted
		}
	}
	st.Decision = rotation.Decide(facts)
	if err := emit(ios.Out, c.output, st, func(w io.Writer) { statusTable(w, st, keyID) }); err != nil {
		return err
	}
	switch {
	case st.Decision.Stage == rotation.NoEvidence:
		return refused("no evidence: %s", st.Decision.NextAction)
	case st.Decision.Stage.NeedsAction():
		return &exitErr{code: exitFinding, err: fmt.Errorf("action needed: %s", st.Decision.NextAction)}
	case !st.Encrypted:
		return &exitErr{code: exitFinding, err: fmt.Errorf("not encrypted at rest")}
	}
	return nil
}

func statusTable(w io.Writer, st statusReport, keyID string) {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "NO"
	}
	fmt.Fprintf(w, "Encrypted at rest:\t%s (%d plaintext objects)\n", yes(st.Encrypted), st.Plaintext)
	if len(st.Config) == 0 {
		fmt.Fprintf(w, "Provider order:\tnot checked (pass --encryption-config)\n")
	}
	for _, r := range st.Config {
		fmt.Fprintf(w, "Provider order (%s):\t%s\n", r.Resource, strings.Join(r.Providers, " > "))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  problem:\t%s\n", p)
		}
	}
	fmt.Fprintf(w, "Current key:\tversion %d, created %s ago (from %s)\n", st.KeyVersion, st.KeyVersionAge, st.KeyIDSource)
	fmt.Fprintf(w, "  key_id:\t%s\n", keyID)
	if st.MinDecryption > 0 {
		fmt.Fprintf(w, "  min_decryption_version:\t%d\n", st.MinDecryption)
	}
	switch {
	case st.APIServersAgree == nil:
		fmt.Fprintf(w, "API servers on it:\tunknown (no envelope encryption metrics)\n")
	default:
		fmt.Fprintf(w, "API servers on it:\t%s (%d reporting)\n", yes(*st.APIServersAgree), len(st.APIServers))
		// Name the laggards here, not only in -o json: they are what the
		// operator has to go and look at.
		want := keysource.HashKeyID(keyID)
		for _, k := range st.APIServers {
			if k.KeyIDHash != want {
				fmt.Fprintf(w, "  not on it:\tAPI server %s reports key_id hash %s (last seen %s ago)\n",
					k.APIServerIDHash, k.KeyIDHash, time.Since(k.LastSeen).Round(time.Second))
			}
		}
	}
	fmt.Fprintf(w, "Objects by key version:\t")
	if len(st.ObjectsByVersion) == 0 {
		fmt.Fprintf(w, "none")
	}
	for _, vn := range sortedVersions(st.ObjectsByVersion) {
		fmt.Fprintf(w, "v%d=%d ", vn, st.ObjectsByVersion[vn])
	}
	fmt.Fprintf(w, "\nStale objects:\t%d (of %d scanned at revision %d)\n", st.Stale, total(st.Scan), st.Scan.Revision)
	for _, n := range st.Scan.NotScanned {
		fmt.Fprintf(w, "Not scanned:\t%s (wildcard in the EncryptionConfiguration)\n", n)
	}
	fmt.Fprintf(w, "Rotation stage:\t%s\n", st.Decision.Stage)
	fmt.Fprintf(w, "Next action:\t%s\n", st.Decision.NextAction)
}

func sortedVersions(m map[int]int) []int {
	var vs []int
	for v := range m {
		vs = append(vs, v)
	}
	for i := 1; i < len(vs); i++ {
		for j := i; j > 0 && vs[j] < vs[j-1]; j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
	return vs
}

func total(r scan.Report) int {
	n := 0
	for _, c := range r.Resources {
		n += c.Total
	}
	return n
}
