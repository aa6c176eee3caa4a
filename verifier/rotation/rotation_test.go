package rotation

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

func kid(v int) string {
	return transitkey.NewKeyID("", "transit", "kms", v, time.Unix(int64(1000*v), 0)).String()
}

func TestDecide(t *testing.T) {
	other := transitkey.NewKeyID("", "transit", "other", 1, time.Unix(5, 0)).String()
	cases := []struct {
		name   string
		facts  Facts
		stage  Stage
		action string
		trimTo int
		lowest int
	}{
		{"fresh key, all current", Facts{Scanned: 11, CurrentKeyID: kid(1), MinDecryptionVersion: 1, ByKeyID: map[string]int{kid(1): 10}},
			Current, "nothing to do", 0, 1},
		{"plaintext left", Facts{Scanned: 11, CurrentKeyID: kid(1), MinDecryptionVersion: 1, Plaintext: 3, Stale: 3, ByKeyID: map[string]int{kid(1): 10}},
			Migrating, "3 of them in plaintext", 0, 1},
		{"rotated, API servers behind", Facts{Scanned: 11, CurrentKeyID: kid(2), MinDecryptionVersion: 1, APIServersKnown: true, Stale: 10, ByKeyID: map[string]int{kid(1): 10}},
			AwaitingAPIServers, "wait until every API server", 0, 1},
		{"rotated, API servers agree, old objects left", Facts{Scanned: 11, CurrentKeyID: kid(2), MinDecryptionVersion: 1, APIServersKnown: true, APIServersAgree: true, Stale: 10, ByKeyID: map[string]int{kid(1): 10, kid(2): 1}},
			Migrating, "reencrypt", 0, 1},
		{"rotated, metrics unknown, old objects left", Facts{Scanned: 11, CurrentKeyID: kid(2), MinDecryptionVersion: 1, Stale: 10, ByKeyID: map[string]int{kid(1): 10}},
			Migrating, "reencrypt", 0, 1},
		{"migrated, version 1 still decrypts", Facts{Scanned: 11, CurrentKeyID: kid(2), MinDecryptionVersion: 1, APIServersKnown: true, APIServersAgree: true, ByKeyID: map[string]int{kid(2): 11}},
			Migrated, "from 1 to 2", 2, 2},
		{"migrated and trimmed", Facts{Scanned: 11, CurrentKeyID: kid(2), MinDecryptionVersion: 2, ByKeyID: map[string]int{kid(2): 11}},
			Current, "nothing to do", 0, 2},
		{"three versions, trimmed to the oldest in use", Facts{Scanned: 11, CurrentKeyID: kid(3), MinDecryptionVersion: 1, ByKeyID: map[string]int{kid(2): 1, kid(3): 5}},
			Migrated, "from 1 to 2", 2, 2},
		{"another key's objects do not hold versions back", Facts{Scanned: 11, CurrentKeyID: kid(2), MinDecryptionVersion: 1, ByKeyID: map[string]int{other: 4, kid(2): 1}},
			Migrated, "from 1 to 2", 2, 2},
		{"empty scan is no evidence", Facts{CurrentKeyID: kid(2), MinDecryptionVersion: 1},
			NoEvidence, "proves nothing", 2, 0},
		{"never rotated, min_decryption_version unknown", Facts{Scanned: 11, CurrentKeyID: kid(1), ByKeyID: map[string]int{kid(1): 11}},
			Current, "nothing to do", 0, 1},
		{"never rotated, min_decryption_version 1", Facts{Scanned: 11, CurrentKeyID: kid(1), MinDecryptionVersion: 1, ByKeyID: map[string]int{kid(1): 11}},
			Current, "nothing to do", 0, 1},
		{"rotated and migrated, Vault not asked", Facts{Scanned: 11, CurrentKeyID: kid(2), ByKeyID: map[string]int{kid(2): 11}},
			Current, "give --vault-addr", 0, 2},
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
	cur, _ := transitkey.ParseKeyID(kid(2))
	base := TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: Evidence{Versions: map[int]int{2: 5}, Total: 40}}
	if err := CheckTrim(base, 2); err != nil {
		t.Fatalf("trim to 2 with everything on v2: %v", err)
	}
	none := base
	none.Evidence, none.AllowNoEvidence = Evidence{Total: 40}, true
	if err := CheckTrim(none, 2); err != nil {
		t.Fatalf("trim with --allow-no-evidence: %v", err)
	}
	refusals := []struct {
		name   string
		mutate func(*TrimFacts)
		to     int
		reason string
	}{
		{"objects on v1 in any resource", func(f *TrimFacts) { f.Evidence.Versions = map[int]int{1: 1, 2: 5} }, 2, "v1=1"},
		{"nothing found", func(f *TrimFacts) { f.Evidence.Versions = nil }, 2, "no evidence"},
		{"unreadable key_id", func(f *TrimFacts) { f.Evidence.Unreadable = 1 }, 2, "not in the vaultkms.v1 format"},
		{"API servers not settled", func(f *TrimFacts) { f.APIServers = errors.New("apiserver x reports v1") }, 2, "API server gate"},
		{"beyond latest", func(*TrimFacts) {}, 3, "does not exist"},
		{"already there", func(f *TrimFacts) { f.MinDecryptionVersion = 2 }, 2, "already 2"},
		{"never rotated", func(f *TrimFacts) { f.Current.Version, f.MinDecryptionVersion = 1, 0 }, 1, "nothing to trim"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			f.Evidence.Versions = map[int]int{2: 5}
			tc.mutate(&f)
			err := CheckTrim(f, tc.to)
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("CheckTrim = %v, want a refusal naming %q", err, tc.reason)
			}
		})
	}
}

func TestEvidence(t *testing.T) {
	cur, _ := transitkey.ParseKeyID(kid(2))
	other := transitkey.NewKeyID("", "transit", "other", 1, time.Unix(5, 0)).String()
	var e Evidence
	for i, v := range []storedvalue.Value{
		{Kind: storedvalue.Identity},
		{Kind: storedvalue.KMSv2, Provider: "vault", KeyID: kid(1)},
		{Kind: storedvalue.KMSv2, Provider: "vault", KeyID: kid(2)},
		{Kind: storedvalue.KMSv2, Provider: "vault", KeyID: kid(2)},
		{Kind: storedvalue.KMSv2, Provider: "vault", KeyID: other},
		{Kind: storedvalue.KMSv2, Provider: "vault"},
		{Kind: storedvalue.KMSv1, Provider: "vault"},
		{Kind: storedvalue.KMSv2, Provider: "vault", KeyID: "projects/p/keys/k/versions/1"},
		{Kind: storedvalue.AESGCM, Provider: "key1"},
	} {
		e.Add(fmt.Sprintf("/registry/secrets/default/s%d", i), v, cur)
	}
	want := []string{"/registry/secrets/default/s5", "/registry/secrets/default/s6", "/registry/secrets/default/s7"}
	if e.Total != 9 || e.Versions[1] != 1 || e.Versions[2] != 2 || e.OtherKeys != 1 || e.Unreadable != 3 || e.Found() != 3 ||
		strings.Join(e.UnreadableKeys, ",") != strings.Join(want, ",") {
		t.Fatalf("Evidence = %+v", e)
	}
	// trim refuses and lists them.
	err := CheckTrim(TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: e}, 2)
	if GateOf(err) != GateUnreadable || !strings.Contains(err.Error(), "/registry/secrets/default/s6") || !strings.Contains(err.Error(), "/registry/secrets/default/s7") {
		t.Fatalf("CheckTrim = %v, want the unreadable gate listing the KMS v1 and the foreign key_id value", err)
	}
}

// Each refusal of CheckTrim names its gate, which the autopilot turns into
// the reason of its Stopped condition.
func TestCheckTrimNamesTheGate(t *testing.T) {
	cur := transitkey.NewKeyID("", "transit", "k", 3, time.Time{})
	ev := func(versions map[int]int, unreadable int) Evidence {
		return Evidence{Versions: versions, Unreadable: unreadable, Total: 10}
	}
	for _, c := range []struct {
		name string
		f    TrimFacts
		to   int
		want Gate
	}{
		{"API servers", TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: ev(map[int]int{3: 1}, 0), APIServers: errors.New("x")}, 3, GateAPIServers},
		{"version", TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: ev(map[int]int{3: 1}, 0)}, 4, GateVersion},
		{"nothing to trim", TrimFacts{Current: cur, MinDecryptionVersion: 3, Evidence: ev(map[int]int{3: 1}, 0)}, 3, GateNothing},
		{"unreadable", TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: ev(map[int]int{3: 1}, 1)}, 3, GateUnreadable},
		{"stale", TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: ev(map[int]int{2: 1, 3: 1}, 0)}, 3, GateStale},
		{"no evidence", TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: ev(nil, 0)}, 3, GateNoEvidence},
		{"passes", TrimFacts{Current: cur, MinDecryptionVersion: 1, Evidence: ev(map[int]int{3: 1}, 0)}, 3, ""},
	} {
		err := CheckTrim(c.f, c.to)
		if got := GateOf(err); got != c.want || (c.want == "") != (err == nil) {
			t.Errorf("%s: gate %q (%v), want %q", c.name, got, err, c.want)
		}
	}
}
