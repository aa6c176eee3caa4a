package main

import (
	"flag"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/vaultkms/vaultkms/internal/flagdoc"
)

// TestFlagsDocumented fails when docs/rotation.md's table of the auditor's
// flags and the program disagree: a flag added, renamed or removed, or a
// default changed on one side only.
func TestFlagsDocumented(t *testing.T) {
	fs := flag.NewFlagSet("vaultkms-auditor", flag.ContinueOnError)
	bindFlags(fs, &options{}, func(string) string { return "" })
	config.RegisterFlags(fs) // --kubeconfig, which controller-runtime registers on the command line's set
	flagdoc.Check(t, fs, "../../docs/rotation.md", "### The auditor's flags")
}
