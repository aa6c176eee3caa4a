package main

import (
	"testing"

	"github.com/vaultkms/vaultkms/internal/flagdoc"
)

// TestFlagsDocumented fails when docs/plugin.md's flag table and the
// program disagree: a flag added, renamed or removed, or a default changed
// on one side only.
func TestFlagsDocumented(t *testing.T) {
	flagdoc.Check(t, newFlagSet(&options{}), "../../docs/plugin.md", "#### Flags")
}
