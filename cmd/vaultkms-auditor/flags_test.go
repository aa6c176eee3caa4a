package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/vaultkms/vaultkms/internal/flagdoc"
)

// TestFlagsDocumented fails when docs/rotation.md's table of the
// auditor's flags and the program disagree: a flag added, renamed or
// removed, or a default changed on one side only.
func TestFlagsDocumented(t *testing.T) {
	fs := flag.NewFlagSet("vaultkms-auditor", flag.ContinueOnError)
	var o options
	bindFlags(fs, &o, func(string) string { return "" })
	// controller-runtime registers --kubeconfig on the command line's set.
	config.RegisterFlags(fs)
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "rotation.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range flagdoc.Problems(fs, doc, "### The auditor's flags") {
		t.Error(p)
	}
}
