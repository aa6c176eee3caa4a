package version

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
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

func TestBuildInfoNamesComponentAndVersion(t *testing.T) {
	got := BuildInfo("auditor", "v1.2.3")
	want := `
# HELP vaultkms_auditor_build_info Build information of the vaultkms auditor; the value is always 1.
# TYPE vaultkms_auditor_build_info gauge
vaultkms_auditor_build_info{goversion="` + runtime.Version() + `",version="v1.2.3"} 1
`
	if err := testutil.CollectAndCompare(got, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
