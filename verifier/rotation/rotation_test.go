package rotation

import (
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/internal/transitkey"
)

func kid(v int) string {
	return transitkey.KeyID{Mount: "transit", Key: "kms", Version: v, Created: time.Unix(int64(1000*v), 0)}.String()
}

func TestDecide(t *testing.T) {
	other := transitkey.KeyID{Mount: "transit", Key: "other", Version: 1, Created: time.Unix(5, 0)}.String()
	cases := []struct {
		name   string
		facts  Facts
		stage  Stage
		action string
		trimTo int
		lowest int
	}{
		{"fresh key, all current", Facts{CurrentKeyID: kid(1), MinDecryptionVersion: 1, ByKeyID: map[string]int{kid(1): 10}},
			Current, "nothing to do", 0, 1},
		{"plaintext left", Facts{CurrentKeyID: kid(1), MinDecryptionVersion: 1, Plaintext: 3, Stale: 3, ByKeyID: map[string]int{kid(1): 10}},
			Migrating, "3 of them in plaintext", 0, 1},
		{"rotated, API servers behind", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 1, APIServersKnown: true, Stale: 10, ByKeyID: map[string]int{kid(1): 10}},
			AwaitingAPIServers, "wait until every API server", 0, 1},
		{"rotated, API servers agree, old objects left", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 1, APIServersKnown: true, APIServersAgree: true, Stale: 10, ByKeyID: map[string]int{kid(1): 10, kid(2): 1}},
			Migrating, "reencrypt", 0, 1},
		{"rotated, metrics unknown, old objects left", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 1, Stale: 10, ByKeyID: map[string]int{kid(1): 10}},
			Migrating, "reencrypt", 0, 1},
		{"migrated, version 1 still decrypts", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 1, APIServersKnown: true, APIServersAgree: true, ByKeyID: map[string]int{kid(2): 11}},
			Migrated, "from 1 to 2", 2, 2},
		{"migrated and trimmed", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 2, ByKeyID: map[string]int{kid(2): 11}},
			Current, "nothing to do", 0, 2},
		{"three versions, trimmed to the oldest in use", Facts{CurrentKeyID: kid(3), MinDecryptionVersion: 1, ByKeyID: map[string]int{kid(2): 1, kid(3): 5}},
			Migrated, "from 1 to 2", 2, 2},
		{"another key's objects do not hold versions back", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 1, ByKeyID: map[string]int{other: 4, kid(2): 1}},
			Migrated, "from 1 to 2", 2, 2},
		{"empty etcd after rotation", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 0},
			Migrated, "from 1 to 2", 2, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.facts)
			if d.Stage != tc.stage || !strings.Contains(d.NextAction, tc.action) || d.TrimTo != tc.trimTo || d.LowestVersionInUse != tc.lowest {
				t.Fatalf("Decide = %+v; want stage %s, action ~%q, trimTo %d, lowest %d", d, tc.stage, tc.action, tc.trimTo, tc.lowest)
			}
		})
	}
}

func TestCheckTrim(t *testing.T) {
	base := Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 1, ByKeyID: map[string]int{kid(2): 5}}
	if err := CheckTrim(base, 2); err != nil {
		t.Fatalf("trim to 2 with everything on v2: %v", err)
	}
	refusals := []struct {
		name   string
		mutate func(*Facts)
		to     int
		reason string
	}{
		{"stale objects", func(f *Facts) { f.Stale = 3 }, 2, "reencrypt"},
		{"objects on v1", func(f *Facts) { f.ByKeyID = map[string]int{kid(1): 1, kid(2): 5} }, 2, "still need version 1"},
		{"API servers behind", func(f *Facts) { f.APIServersKnown = true }, 2, "API server"},
		{"beyond latest", func(*Facts) {}, 3, "does not exist"},
		{"already there", func(f *Facts) { f.MinDecryptionVersion = 2 }, 2, "already 2"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			tc.mutate(&f)
			err := CheckTrim(f, tc.to)
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("CheckTrim = %v, want a refusal naming %q", err, tc.reason)
			}
		})
	}
}
