package vault

import (
	"testing"
	"time"
)

func TestNextLoginWait(t *testing.T) {
	p := BackoffPolicy{Min: time.Second, Max: 8 * time.Second, StableHold: 10 * time.Second}
	cases := []struct {
		name   string
		prev   time.Duration
		held   time.Duration
		failed bool
		want   time.Duration
	}{
		{"first failure", 0, 0, true, time.Second},
		{"failures double", 2 * time.Second, 0, true, 4 * time.Second},
		{"capped", 8 * time.Second, 0, true, 8 * time.Second},
		{"token dropped at once doubles like a failure", 2 * time.Second, 100 * time.Millisecond, false, 4 * time.Second},
		{"a success does not reset by itself", 4 * time.Second, 9 * time.Second, false, 8 * time.Second},
		{"a stable token halves", 8 * time.Second, 10 * time.Second, false, 4 * time.Second},
		{"never below min", time.Second, time.Hour, false, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := NextLoginWait(tc.prev, tc.held, tc.failed, p); got != tc.want {
				t.Fatalf("NextLoginWait = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestLoginBound(t *testing.T) {
	// 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5 fit in a minute; 61.5 does not.
	if got := LoginBound(time.Minute, DefaultBackoff); got != 7 {
		t.Fatalf("LoginBound(1m) = %d, want 7", got)
	}
	if got := LoginBound(20*time.Second, DefaultBackoff); got != 6 {
		t.Fatalf("LoginBound(20s) = %d, want 6", got)
	}
}

func TestReplaceGrace(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{5 * time.Second: time.Second, time.Hour: 30 * time.Second, 0: 0} {
		if got := ReplaceGrace(ttl); got != want {
			t.Errorf("ReplaceGrace(%s) = %s, want %s", ttl, got, want)
		}
	}
}

func TestParseAddresses(t *testing.T) {
	good := map[string]int{
		"https://vault.example:8200":                    1,
		"https://a:8200, https://b:8200,https://c:8200": 3,
		"http://127.0.0.1:8200":                         1,
		"http://localhost:8100":                         1,
		"http://[::1]:8200/":                            1,
	}
	for s, n := range good {
		got, err := ParseAddresses(s)
		if err != nil || len(got) != n {
			t.Errorf("ParseAddresses(%q) = %v, %v", s, got, err)
		}
	}
	bad := []string{"", "vault:8200", "http://10.0.0.1:8200", "http://vault.example:8200", "unix:///run/vault.sock",
		"https://user:pw@vault:8200", "https://vault:8200/v1", "https://vault:8200?x=1", "https://a:1,"}
	for _, s := range bad {
		if _, err := ParseAddresses(s); err == nil {
			t.Errorf("ParseAddresses(%q) succeeded", s)
		}
	}
}
