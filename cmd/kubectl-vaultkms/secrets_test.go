package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/verifier/keysource"
)

func TestTimeLeft(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	cases := []struct {
		in   *time.Time
		want string
	}{
		{nil, "-"},
		{at(59*time.Minute + 30*time.Second), "59m"},
		{at(26 * time.Hour), "26h"},
		{at(90 * time.Second), "90s"},
		{at(-3 * time.Minute), "expired 3m ago"},
	}
	for _, tc := range cases {
		if got := timeLeft(tc.in, now); got != tc.want {
			t.Errorf("timeLeft(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSecretsTable(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	vs := &v1alpha1.VaultSecret{}
	vs.Namespace, vs.Name = "team-a", "db"
	vs.CreationTimestamp = metav1.NewTime(now.Add(-2 * time.Hour))
	vs.Status.SecretName = "db-creds"
	vs.Status.ExpiresAt = &metav1.Time{Time: now.Add(45 * time.Minute)}
	vs.Status.RefreshAt = &metav1.Time{Time: now.Add(30 * time.Minute)}
	vs.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Synced"}}
	row := rowOf(vs, now)
	if row.TimeLeft == nil || *row.TimeLeft != 45*60 {
		t.Fatalf("time left %v, want 2700 s", row.TimeLeft)
	}
	var b bytes.Buffer
	secretsTable(&b, []secretRow{row}, true, now)
	out := b.String()
	for _, want := range []string{"NAMESPACE", "TIME LEFT", "team-a", "db-creds", "45m", "30m", "Synced", "120m"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestSecretsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"secrets", "-o", "wide"}, `-o "wide"`},
		{[]string{"secrets", "--expiring-within", "-1m"}, "--expiring-within"},
		{[]string{"secrets", "extra"}, "unexpected arguments"},
	} {
		_, stderr, code := runCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
}

// The status table names an API server that is not on the current key_id,
// not only the JSON.
func TestStatusTableNamesLaggingAPIServer(t *testing.T) {
	keyID := "vault:transit/kms:v2"
	agree := false
	st := statusReport{APIServersAgree: &agree, ObjectsByVersion: map[int]int{}, APIServers: []keysource.APIServerKey{
		{APIServerIDHash: "sha256:aaa", Provider: "vault", KeyIDHash: keysource.HashKeyID(keyID), LastSeen: time.Now()},
		{APIServerIDHash: "sha256:bbb", Provider: "vault", KeyIDHash: "sha256:old", LastSeen: time.Now()},
	}}
	var b bytes.Buffer
	statusTable(&b, st, keyID)
	out := b.String()
	if !strings.Contains(out, "not on it") || !strings.Contains(out, "sha256:bbb") || strings.Contains(out, "sha256:aaa reports") {
		t.Fatalf("table:\n%s", out)
	}
}
