package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain skips the whole package under -short (`make unit`): every test
// here starts real components that `make tools` builds, which a fresh
// clone does not have.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped under -short; these tests need the real components of `make tools`")
		os.Exit(0)
	}
	os.Exit(m.Run())
}
