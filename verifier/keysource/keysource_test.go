package keysource

import (
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/internal/transitkey"
)

const metrics = `# HELP apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds [ALPHA] The last time in seconds when a keyID was returned by the Status RPC call.
# TYPE apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds gauge
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash="sha256:aaa",key_id_hash="%OLD%",provider_name="vault"} 1.7e+09
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash="sha256:aaa",key_id_hash="%NEW%",provider_name="vault"} 1.8e+09
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash="sha256:bbb",key_id_hash="%OLD%",provider_name="vault"} 1.75e+09
# TYPE some_other_metric counter
some_other_metric 3
`

func TestFromAPIServerMetricsAndAgreement(t *testing.T) {
	text := strings.NewReplacer("%OLD%", HashKeyID("old"), "%NEW%", HashKeyID("new")).Replace(metrics)
	keys, err := FromAPIServerMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyIDHash != HashKeyID("new") || keys[1].KeyIDHash != HashKeyID("old") {
		t.Fatalf("keys = %+v", keys)
	}
	if agree, n := Agreement(keys, "vault", "new"); agree || n != 2 {
		t.Fatalf("Agreement(new) = %v, %d; server bbb is still on old", agree, n)
	}
	if agree, _ := Agreement(keys[:1], "vault", "new"); !agree {
		t.Fatal("a single server on the new key must agree")
	}
	if agree, n := Agreement(keys, "other", "new"); agree || n != 0 {
		t.Fatal("no server for a provider is not agreement")
	}
}

func TestHashKeyID(t *testing.T) {
	// sha256("abc")
	if got := HashKeyID("abc"); got != "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatal(got)
	}
}

// The key_id built from Vault must be the plugin's text however the mount
// and namespace are spelled, or the API-server check never passes.
func TestTransitKeyOfSpellsTheKeyIDAsThePluginDoes(t *testing.T) {
	created := time.Unix(1764104400, 0).UTC()
	ki := transitkey.KeyInfo{LatestVersion: 2, Created: map[int]time.Time{1: created.Add(-time.Hour), 2: created}}
	want := "vaultkms.v1::transit:kms:2:1764104400"
	for _, tc := range []struct{ namespace, mount string }{{"", "transit"}, {"", "transit/"}, {"root", "/transit/"}} {
		tk := transitKeyOf(tc.namespace, tc.mount, "kms", ki)
		if got := tk.Current.String(); got != want {
			t.Errorf("namespace %q mount %q: key_id %q, want %q", tc.namespace, tc.mount, got, want)
		}
		if tk.Mount != "transit" || tk.Namespace != "" {
			t.Errorf("namespace %q mount %q: TransitKey names mount %q namespace %q, want the normalised spelling", tc.namespace, tc.mount, tk.Mount, tk.Namespace)
		}
	}
}
