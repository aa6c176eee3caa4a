// Package version holds the version every vaultkms binary reports with
// --version. The Makefile stamps it at link time:
//
//	-ldflags '-X github.com/vaultkms/vaultkms/internal/version.Version=v1.2.3'
package version

import (
	"fmt"
	"runtime"
)

// Version is the release (a git describe), or "dev" for a plain `go build`.
var Version = "dev"

// String is what `<binary> --version` prints.
func String(binary string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)", binary, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
