// Package version holds the version every vaultkms binary reports with
// --version. The Makefile stamps it at link time:
//
//	-ldflags '-X github.com/vaultkms/vaultkms/internal/version.Version=v1.2.3'
package version

import (
	"fmt"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is the release (a git describe), or "dev" for a plain `go build`.
var Version = "dev"

// String is what `<binary> --version` prints.
func String(binary string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)", binary, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// BuildInfo is the gauge vaultkms_<component>_build_info, always 1, whose
// labels say which build runs: dashboards and alerts tell versions apart
// during a rollout by it.
func BuildInfo(component, version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vaultkms_" + component + "_build_info",
		Help:        "Build information of the vaultkms " + component + "; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
