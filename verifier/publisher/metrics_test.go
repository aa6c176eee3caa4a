package publisher

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vaultkms/vaultkms/internal/version"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// The auditor's series carry its component in their names; a failed scan
// moves only the error timestamp, so the ok one keeps dating the last
// success (what VaultKMSScanFailing alerts on).
func TestAuditorMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.observe(scan.Report{Resources: []scan.Counts{{Resource: "secrets", Total: 6, Plaintext: 1, Stale: 3, Current: 3}}}, nil, time.Second)
	want := `
# HELP vaultkms_auditor_build_info Build information of the vaultkms auditor; the value is always 1.
# TYPE vaultkms_auditor_build_info gauge
vaultkms_auditor_build_info{goversion="` + runtime.Version() + `",version="` + version.Version + `"} 1
# HELP vaultkms_auditor_encryption_objects Objects in etcd at the last scan, by resource and state (current, stale, plaintext).
# TYPE vaultkms_auditor_encryption_objects gauge
vaultkms_auditor_encryption_objects{resource="secrets",state="current"} 3
vaultkms_auditor_encryption_objects{resource="secrets",state="plaintext"} 1
vaultkms_auditor_encryption_objects{resource="secrets",state="stale"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "vaultkms_auditor_build_info", "vaultkms_auditor_encryption_objects"); err != nil {
		t.Fatal(err)
	}
	ok := testutil.ToFloat64(m.last.WithLabelValues("ok"))
	m.observe(scan.Report{}, errors.New("etcd unreachable"), time.Second)
	if got := testutil.ToFloat64(m.last.WithLabelValues("ok")); got != ok {
		t.Fatalf("a failed scan moved the ok timestamp from %v to %v", ok, got)
	}
	if got := testutil.CollectAndCount(m.duration, "vaultkms_auditor_scan_duration_seconds"); got != 1 {
		t.Fatalf("scan duration series = %d, want 1", got)
	}
}
