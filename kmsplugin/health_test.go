package kmsplugin

import (
	"strings"
	"testing"
	"time"
)

func TestHealthEvaluate(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ok := healthInputs{KeyKnown: true, LastSuccess: now.Add(-5 * time.Second), TokenValid: true}
	cases := []struct {
		name   string
		mutate func(*healthInputs)
		want   string // "ok" or a substring of the reason
	}{
		{"healthy", func(*healthInputs) {}, "ok"},
		{"token without expiry", func(h *healthInputs) { h.TokenExpiry = time.Time{} }, "ok"},
		{"token valid until later", func(h *healthInputs) { h.TokenExpiry = now.Add(time.Minute) }, "ok"},
		{"token expired", func(h *healthInputs) { h.TokenExpiry = now }, "vault token expired"},
		{"token refused", func(h *healthInputs) { h.TokenValid, h.TokenReason = false, "vault refused the token (403)" }, "refused the token"},
		{"key never read", func(h *healthInputs) {
			h.KeyKnown, h.LastSuccess, h.Failing, h.FailingSince, h.FailureReason = false, time.Time{}, true, now, "dial tcp: connection refused"
		}, "transit key not read yet: dial tcp"},
		{"last request failed", func(h *healthInputs) {
			h.Failing, h.FailingSince, h.FailureReason = true, now.Add(-time.Second), "HTTP 503: Vault is sealed"
		}, "Vault is sealed"},
		{"failure then success", func(h *healthInputs) { h.FailingSince, h.FailureReason = now.Add(-10*time.Second), "old" }, "ok"},
		{"silent too long", func(h *healthInputs) { h.LastSuccess = now.Add(-31 * time.Second) }, "no answer from vault since"},
		{"silent exactly the limit", func(h *healthInputs) { h.LastSuccess = now.Add(-30 * time.Second) }, "ok"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := ok
			tc.mutate(&h)
			got := h.evaluate(now, 30*time.Second)
			if tc.want == "ok" {
				if got != "ok" {
					t.Fatalf("evaluate = %q, want ok", got)
				}
				return
			}
			if got == "ok" || !strings.Contains(got, tc.want) {
				t.Fatalf("evaluate = %q, want a reason containing %q", got, tc.want)
			}
		})
	}
}
