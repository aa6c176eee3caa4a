package apiservers

import (
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/verifier/keysource"
)

func TestCheck(t *testing.T) {
	now := time.Unix(10000, 0)
	oldH, newH := keysource.HashKeyID("old"), keysource.HashKeyID("new")
	k := func(id, hash string, ago time.Duration) keysource.APIServerKey {
		return keysource.APIServerKey{APIServerIDHash: id, Provider: "vault", KeyIDHash: hash, LastSeen: now.Add(-ago)}
	}
	settled := Report{URL: "a", Keys: []keysource.APIServerKey{k("A", oldH, 5*time.Minute), k("A", newH, 10*time.Second)}}
	fresh := Report{URL: "b", Keys: []keysource.APIServerKey{k("B", newH, 20*time.Second)}}
	cases := []struct {
		name    string
		reports []Report
		problem string
	}{
		{"all settled", []Report{settled, fresh}, ""},
		{"none", nil, "no API server"},
		{"unreadable", []Report{settled, {URL: "c", Err: "connection refused"}}, "c: cannot read metrics"},
		{"other provider only", []Report{{URL: "d", Keys: []keysource.APIServerKey{{APIServerIDHash: "D", Provider: "aws", KeyIDHash: newH, LastSeen: now}}}}, "no key_id for provider"},
		{"behind", []Report{settled, {URL: "e", Keys: []keysource.APIServerKey{k("E", oldH, time.Second), k("E", newH, time.Hour)}}}, "still reports another"},
		{"switched too recently", []Report{{URL: "f", Keys: []keysource.APIServerKey{k("F", oldH, 30*time.Second), k("F", newH, time.Second)}}}, "less than the settle time"},
		{"report too old", []Report{{URL: "g", Keys: []keysource.APIServerKey{k("G", newH, 10*time.Minute)}}}, "plugin may be failing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.reports, "vault", "new", 2*time.Minute, now)
			if tc.problem == "" && err != nil {
				t.Fatalf("Check = %v, want pass", err)
			}
			if tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)) {
				t.Fatalf("Check = %v, want a problem naming %q", err, tc.problem)
			}
		})
	}
}

func TestSame(t *testing.T) {
	a := []Server{{APIServerIDHash: "A"}, {APIServerIDHash: "B"}}
	if err := Same(a, []Server{{APIServerIDHash: "B"}, {APIServerIDHash: "A"}}); err != nil {
		t.Fatal(err)
	}
	if err := Same(a, append(a, Server{APIServerIDHash: "C"})); err == nil {
		t.Fatal("a new API server during the scan went unnoticed")
	}
}
