package e2e

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// TestAuditorStartsWithEtcdUnreachable: an auditor whose etcd does not
// answer when it starts must stay up and say so (a failed scan in its
// metrics and EncryptionStatus, which the ScanFailing alert reads), then
// scan as soon as etcd answers. It used to exit after its dial timeout,
// leaving nothing to scrape and no status to read; and, with a custom
// resource in --resources, it exited looking up its definition in etcd.
func TestAuditorStartsWithEtcdUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e")
	}
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, RefreshInterval: time.Second})
	p.WaitKeyID(t, 20*time.Second)
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{EncryptionConfig: harness.KMSEncryptionConfig(provider, p.Socket, "secrets"),
		CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	etcd := startBlackHole(t, strings.TrimPrefix(cp.EtcdURL, "http://"))
	etcd.hole()
	a := startAuditor(t, cp, "--etcd-endpoints=http://"+etcd.ln.Addr().String(), "--kms-socket=unix://"+p.Socket,
		"--scan-interval=5s", "--etcd-dial-timeout=1s", "--etcd-request-timeout=2s",
		// A custom resource among them: its definition is looked up in
		// etcd by each scan, not at start, where it made the auditor exit.
		"--resources=secrets,vaultsecrets.secrets.vaultkms.io")

	metrics := func() string {
		resp, err := http.Get(a.MetricsURL)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(metrics(), `vaultkms_auditor_scan_last_timestamp_seconds{result="error"}`) {
		if syscall.Kill(a.Pid, 0) != nil {
			t.Fatalf("the auditor exited with etcd unreachable")
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed scan in the auditor's metrics within 60s:\n%s", metrics())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if strings.Contains(metrics(), `vaultkms_auditor_scan_last_timestamp_seconds{result="ok"}`) {
		t.Fatal("a scan succeeded with etcd unreachable")
	}
	es := waitEncryptionStatus(t, cp, func(es *v1alpha1.EncryptionStatus) bool {
		return cond(es, v1alpha1.ConditionEncrypted, metav1.ConditionUnknown, v1alpha1.ReasonScanFailed)
	})
	if c := meta.FindStatusCondition(es.Status.Conditions, v1alpha1.ConditionEncrypted); !strings.Contains(c.Message, etcd.ln.Addr().String()) {
		t.Errorf("the ScanFailed message %q does not name the etcd endpoint", c.Message)
	}

	etcd.restore()
	waitEncryptionStatus(t, cp, func(es *v1alpha1.EncryptionStatus) bool {
		return !cond(es, v1alpha1.ConditionEncrypted, metav1.ConditionUnknown, v1alpha1.ReasonScanFailed)
	})
	if !strings.Contains(metrics(), `vaultkms_auditor_scan_last_timestamp_seconds{result="ok"}`) {
		t.Fatalf("no successful scan in the metrics once etcd answered:\n%s", metrics())
	}
}
