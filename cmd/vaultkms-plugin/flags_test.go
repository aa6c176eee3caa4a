package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vaultkms/vaultkms/internal/flagdoc"
)

// TestFlagsDocumented fails when docs/plugin.md's flag table and the
// program disagree: a flag added, renamed or removed, or a default changed
// on one side only.
func TestFlagsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "plugin.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range flagdoc.Problems(newFlagSet(&options{}), doc, "#### Flags") {
		t.Error(p)
	}
}
