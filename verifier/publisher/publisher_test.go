package publisher

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

func TestBuild(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	k1 := transitkey.NewKeyID("", "transit", "kms", 1, time.Unix(1000, 0)).String()
	k2 := transitkey.NewKeyID("", "transit", "kms", 2, time.Unix(2000, 0)).String()
	report := func(plain, old, cur int) scan.Report {
		return scan.Report{CurrentKeyID: k2, Revision: 7, ScannedAt: now, Resources: []scan.Counts{{
			Resource: "secrets", Total: plain + old + cur, Plaintext: plain, Stale: plain + old, Current: cur,
			ByKeyID: map[string]int{k1: old, k2: cur},
		}}}
	}
	cases := []struct {
		name                 string
		rep                  scan.Report
		err                  error
		encrypted, keyCurent metav1.ConditionStatus
		encReason, curReason string
		stage                string
	}{
		{"all current", report(0, 0, 5), nil, "True", "True", v1alpha1.ReasonEncryptionCompleted, v1alpha1.ReasonEncryptionCompleted, "current"},
		{"plaintext and old", report(2, 3, 5), nil, "False", "False", v1alpha1.ReasonPlaintextFound, v1alpha1.ReasonMigrating, "migrating"},
		{"old only", report(0, 3, 5), nil, "True", "False", v1alpha1.ReasonEncryptionCompleted, v1alpha1.ReasonMigrating, "migrating"},
		{"nothing found is no evidence", report(0, 0, 0), nil, "Unknown", "Unknown", v1alpha1.ReasonNoEvidence, v1alpha1.ReasonNoEvidence, "no-evidence"},
		{"scan failed", scan.Report{}, errors.New("etcd unreachable"), "Unknown", "Unknown", v1alpha1.ReasonScanFailed, v1alpha1.ReasonScanFailed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := Build(tc.rep, tc.err, now)
			enc := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionEncrypted)
			cur := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionKeyCurrent)
			if enc == nil || cur == nil {
				t.Fatalf("conditions missing: %+v", st.Conditions)
			}
			if enc.Status != tc.encrypted || enc.Reason != tc.encReason || cur.Status != tc.keyCurent || cur.Reason != tc.curReason {
				t.Fatalf("Encrypted=%s/%s KeyCurrent=%s/%s", enc.Status, enc.Reason, cur.Status, cur.Reason)
			}
			if st.RotationStage != tc.stage {
				t.Fatalf("stage %q, want %q", st.RotationStage, tc.stage)
			}
			if tc.err != nil && !strings.Contains(enc.Message, "etcd unreachable") {
				t.Fatalf("failure message %q", enc.Message)
			}
		})
	}
}

func TestInterval(t *testing.T) {
	if err := CheckInterval(time.Second); err == nil || !strings.Contains(err.Error(), "--scan-interval") {
		t.Fatalf("CheckInterval(1s) = %v, want a refusal naming the flag", err)
	}
	if err := CheckInterval(MinInterval); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		interval time.Duration
		jitter   float64
		want     time.Duration
	}{
		{time.Minute, 0, time.Minute},
		{time.Minute, 0.5, time.Minute + 3*time.Second},
		{time.Millisecond, 0, MinInterval},
	} {
		if got := NextDelay(tc.interval, tc.jitter); got != tc.want {
			t.Errorf("NextDelay(%s, %v) = %s, want %s", tc.interval, tc.jitter, got, tc.want)
		}
	}
}
