package keysource

import (
	"strings"
	"testing"
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
