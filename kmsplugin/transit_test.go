package kmsplugin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// transitAnswering returns a Transit client whose Vault is a server
// answering every request with answer(request's batch_input).
func transitAnswering(t *testing.T, answer func(in []batchItem) any) *Transit {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			BatchInput []batchItem `json:"batch_input"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		_ = json.NewEncoder(w).Encode(answer(req.BatchInput))
	}))
	t.Cleanup(srv.Close)
	c, err := vault.NewClient(vault.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return NewTransit(c, "transit", "kms", nil)
}

type results = []map[string]string

func batchAnswer(rs results) any { return map[string]any{"data": map[string]any{"batch_results": rs}} }

// TestTransitAnswersAreMatchedAndComplete: results pair with items by
// reference in any order; a missing, repeated, foreign or empty result
// fails the request; so does a single answer without its value.
func TestTransitAnswersAreMatchedAndComplete(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		answer func(in []batchItem) any
		items  int
		ok     bool
	}{
		{"reversed order", func(in []batchItem) any {
			return batchAnswer(results{{"reference": in[1].Reference, "plaintext": "Yg=="}, {"reference": in[0].Reference, "plaintext": "YQ=="}})
		}, 2, true},
		{"fewer results", func(in []batchItem) any {
			return batchAnswer(results{{"reference": in[0].Reference, "plaintext": "YQ=="}})
		}, 2, false},
		{"one item twice", func(in []batchItem) any {
			return batchAnswer(results{{"reference": in[0].Reference, "plaintext": "YQ=="}, {"reference": in[0].Reference, "plaintext": "YQ=="}})
		}, 2, false},
		{"another request's references", func([]batchItem) any {
			return batchAnswer(results{{"reference": "0", "plaintext": "YQ=="}, {"reference": "1", "plaintext": "Yg=="}})
		}, 2, false},
		{"a result without plaintext", func(in []batchItem) any {
			return batchAnswer(results{{"reference": in[0].Reference, "plaintext": "YQ=="}, {"reference": in[1].Reference}})
		}, 2, false},
		{"single without plaintext", func([]batchItem) any { return map[string]any{"data": map[string]any{}} }, 1, false},
		{"single with plaintext", func([]batchItem) any { return map[string]any{"data": map[string]any{"plaintext": "YQ=="}} }, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := transitAnswering(t, tc.answer)
			cts := []string{"vault:v1:YQ==", "vault:v1:Yg=="}[:tc.items]
			out, err := tr.DecryptBatch(ctx, "", cts)
			if !tc.ok {
				if err == nil || vault.Classify(err) != vault.KindUnavailable {
					t.Fatalf("DecryptBatch = %+v, %v; want an unavailable error", out, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"YQ==", "Yg=="}[:tc.items]
			for i := range want {
				if out[i].Err != nil || out[i].Value != want[i] {
					t.Fatalf("item %d: %+v, want %q", i, out[i], want[i])
				}
			}
		})
	}
}
