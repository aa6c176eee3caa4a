package version

import (
	"strings"
	"testing"
)

func TestStringNamesBinaryAndVersion(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v9.8.7"
	got := String("vaultkms-controller")
	if !strings.HasPrefix(got, "vaultkms-controller v9.8.7 (go") {
		t.Fatalf("String() = %q, want it to start with the binary, the version and the Go version", got)
	}
}
