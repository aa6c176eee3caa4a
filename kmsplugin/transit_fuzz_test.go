package kmsplugin

import (
	"encoding/json"
	"strconv"
	"testing"
)

func plaintextOf(r batchResult) string { return r.Plaintext }

// FuzzTransitBatchAnswer: whatever the answer, a batch decoded without
// error gives every item the value of the one result carrying its
// reference, never an empty one, and only for a 2xx or 400 answer.
func FuzzTransitBatchAnswer(f *testing.F) {
	f.Add(200, []byte(`{"data":{"batch_results":[{"reference":"7.1","plaintext":"Yg=="},{"reference":"7.0","plaintext":"YQ=="}]}}`), uint8(0))
	f.Add(200, []byte(`{"data":{"batch_results":[{"reference":"7.0","plaintext":"YQ=="},{"reference":"7.0","plaintext":"YQ=="}]}}`), uint8(0))
	f.Add(400, []byte(`{"errors":["x"],"data":{"batch_results":[{"reference":"7.0","error":"bad"},{"reference":"7.1","error":"bad"}]}}`), uint8(0))
	f.Add(200, []byte(`{"data":{"batch_results":[{"Reference":"7.0","plaintext":"YQ=="},{"reference":"7.1","plaintext":""}]}}`), uint8(1))
	f.Fuzz(func(t *testing.T, code int, raw []byte, extra uint8) {
		in := make([]batchItem, 2+int(extra%3))
		for i := range in {
			in[i].Reference = "7." + strconv.Itoa(i)
		}
		out, err := decodeBatch("transit decrypt", code, raw, in, plaintextOf)
		if err != nil {
			return
		}
		if code != 400 && (code < 200 || code >= 300) {
			t.Fatalf("HTTP %d decoded without error", code)
		}
		var br batchResponse
		if json.Unmarshal(raw, &br) != nil {
			t.Fatal("an answer that is not JSON decoded without error")
		}
		if len(out) != len(in) {
			t.Fatalf("%d results for %d items", len(out), len(in))
		}
		for i, it := range in {
			var match []batchResult
			for _, r := range br.Data.BatchResults {
				if r.Reference == it.Reference {
					match = append(match, r)
				}
			}
			if len(match) != 1 {
				t.Fatalf("item %d has %d results but decoded without error", i, len(match))
			}
			if out[i].Err != nil {
				if match[0].Error == "" {
					t.Fatalf("item %d: error %v without one in the answer", i, out[i].Err)
				}
				continue
			}
			if out[i].Value == "" || out[i].Value != match[0].Plaintext || match[0].Error != "" {
				t.Fatalf("item %d: value %q, answer %+v", i, out[i].Value, match[0])
			}
		}
	})
}

// FuzzTransitSingleAnswer: a single answer decoded without error is a 2xx
// answer carrying that very, non-empty value (or a 400, the item's own
// error).
func FuzzTransitSingleAnswer(f *testing.F) {
	f.Add(200, []byte(`{"data":{"plaintext":"YQ=="}}`))
	f.Add(200, []byte(`{"data":{}}`))
	f.Add(400, []byte(`{"errors":["invalid ciphertext"]}`))
	f.Add(307, []byte(``))
	f.Fuzz(func(t *testing.T, code int, raw []byte) {
		out, err := decodeSingle("transit decrypt", "decrypt", code, raw, plaintextOf)
		if err != nil {
			return
		}
		if len(out) != 1 {
			t.Fatalf("%d results", len(out))
		}
		if code == 400 {
			if out[0].Err == nil {
				t.Fatal("a 400 decoded as a value")
			}
			return
		}
		if code < 200 || code >= 300 {
			t.Fatalf("HTTP %d decoded without error", code)
		}
		var sr struct {
			Data batchResult `json:"data"`
		}
		if json.Unmarshal(raw, &sr) != nil || out[0].Err != nil || out[0].Value == "" || out[0].Value != sr.Data.Plaintext {
			t.Fatalf("decoded %+v from %q", out[0], raw)
		}
	})
}
