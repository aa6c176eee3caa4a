package kmsplugin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// itemResult is one batch item's outcome.
type itemResult struct {
	Value string // ciphertext for encrypt, base64 plaintext for decrypt
	Err   error
}

// Transit talks to one Transit key. Every call is one Vault request.
type Transit struct {
	client *api.Client
	raw    *vault.Raw
	mount  string
	key    string
	aad    string // base64 associated data, or empty
	seq    atomic.Uint64
}

// NewTransit returns a Transit client for mount/key. associatedData, when
// set, is bound to every ciphertext.
func NewTransit(client *api.Client, mount, key string, associatedData []byte) *Transit {
	t := &Transit{client: client, raw: vault.NewRaw(client), mount: transitkey.NormalizeMount(mount), key: key}
	if len(associatedData) > 0 {
		t.aad = base64.StdEncoding.EncodeToString(associatedData)
	}
	return t
}

// ReadKey reads the key's versions.
func (t *Transit) ReadKey(ctx context.Context) (transitkey.KeyInfo, error) {
	return transitkey.Read(ctx, t.client, t.mount, t.key)
}

type batchItem struct {
	// Reference is echoed in the item's result: results are matched to
	// items by it, never by position, and a result for an item that was
	// not asked (a stale or foreign answer) fails the request.
	Reference      string `json:"reference,omitempty"`
	Plaintext      string `json:"plaintext,omitempty"`
	Ciphertext     string `json:"ciphertext,omitempty"`
	KeyVersion     int    `json:"key_version,omitempty"`
	AssociatedData string `json:"associated_data,omitempty"`
}

type batchRequest struct {
	BatchInput                 []batchItem `json:"batch_input"`
	PartialFailureResponseCode int         `json:"partial_failure_response_code"`
}

type batchResponse struct {
	Data struct {
		BatchResults []batchResult `json:"batch_results"`
	} `json:"data"`
}

type batchResult struct {
	Reference  string `json:"reference"`
	Ciphertext string `json:"ciphertext"`
	Plaintext  string `json:"plaintext"`
	Error      string `json:"error"`
}

// EncryptBatch wraps each plaintext with the key version given beside it.
// A whole-request failure is returned as the error; an item that Vault
// rejected alone carries its own error.
func (t *Transit) EncryptBatch(ctx context.Context, token string, items []encryptItem) ([]itemResult, error) {
	in := make([]batchItem, len(items))
	for i, it := range items {
		in[i] = batchItem{Plaintext: base64.StdEncoding.EncodeToString(it.plaintext), KeyVersion: it.version, AssociatedData: t.aad}
	}
	return t.batch(ctx, token, "encrypt", in, func(r batchResult) string { return r.Ciphertext })
}

// DecryptBatch unwraps each Transit ciphertext; results hold base64 plaintext.
func (t *Transit) DecryptBatch(ctx context.Context, token string, ciphertexts []string) ([]itemResult, error) {
	in := make([]batchItem, len(ciphertexts))
	for i, c := range ciphertexts {
		in[i] = batchItem{Ciphertext: c, AssociatedData: t.aad}
	}
	return t.batch(ctx, token, "decrypt", in, func(r batchResult) string { return r.Plaintext })
}

func (t *Transit) batch(ctx context.Context, token, op string, in []batchItem, value func(batchResult) string) ([]itemResult, error) {
	what := "transit " + op + " with key \"" + t.mount + "/" + t.key + "\""
	if len(in) == 1 {
		// A lone call, the usual case on a quiet cluster, goes without the
		// batch wrapping: Vault answers it measurably sooner.
		return t.single(ctx, token, op, what, in[0], value)
	}
	// References unique to this request: an answer to another request
	// (of the same size) cannot pass for this one's.
	seq := strconv.FormatUint(t.seq.Add(1), 36) + "."
	for i := range in {
		in[i].Reference = seq + strconv.Itoa(i)
	}
	body, err := json.Marshal(batchRequest{BatchInput: in, PartialFailureResponseCode: 200})
	if err != nil {
		return nil, fmt.Errorf("encode transit %s request: %w", op, err)
	}
	// The token is the one the caller will report if Vault refuses it, so
	// a re-login is tied to the token that was actually refused.
	code, raw, err := t.raw.Post(ctx, t.mount+"/"+op+"/"+t.key, token, body)
	if err != nil {
		return nil, vault.Wrap(what, err)
	}
	return decodeBatch(what, code, raw, in, value)
}

// decodeBatch reads a batch answer for in: pure, so it is fuzzed.
func decodeBatch(what string, code int, raw []byte, in []batchItem, value func(batchResult) string) ([]itemResult, error) {
	// Vault answers 400 with every item's error when all of them failed;
	// those answers still carry per-item results worth reading.
	failed := vault.AnswerError(code, raw)
	if failed != nil && code != 400 {
		return nil, vault.Wrap(what, failed)
	}
	var br batchResponse
	if jerr := json.Unmarshal(raw, &br); jerr != nil {
		if failed != nil {
			return nil, vault.Wrap(what, failed)
		}
		return nil, unusable(what, "not the expected JSON")
	}
	if failed != nil && len(br.Data.BatchResults) == 0 {
		// The request itself was refused, not its items.
		return nil, vault.Wrap(what, failed)
	}
	return matchResults(what, in, br.Data.BatchResults, value)
}

// unusable is an answer that cannot be trusted: Vault (or something
// between) misbehaves, which is never the caller's fault.
func unusable(what, why string) error {
	return &vault.Error{Kind: vault.KindUnavailable, Op: what, Detail: "vault's answer is unusable: " + why}
}

// matchResults pairs each item with the one result that carries its
// reference. Any result missing, repeated or not asked for, and any
// result with neither a value nor an error, fails the whole answer.
func matchResults(what string, in []batchItem, results []batchResult, value func(batchResult) string) ([]itemResult, error) {
	if len(results) != len(in) {
		return nil, unusable(what, fmt.Sprintf("%d results for %d items", len(results), len(in)))
	}
	index := make(map[string]int, len(in))
	for i, it := range in {
		index[it.Reference] = i
	}
	out := make([]itemResult, len(in))
	seen := make([]bool, len(in))
	for _, r := range results {
		i, ok := index[r.Reference]
		if !ok || seen[i] {
			return nil, unusable(what, "a result for an item that was not asked, or twice")
		}
		seen[i] = true
		switch {
		case r.Error != "":
			out[i].Err = vault.Wrap(what, &vault.StatusError{Code: 400, Errors: []string{r.Error}})
		case value(r) == "":
			return nil, unusable(what, "a result with neither a value nor an error")
		default:
			out[i].Value = value(r)
		}
	}
	return out, nil
}

// single sends one item as a plain (not batch) request. Vault's 400 is
// that item's own error, as a batch would have reported it.
func (t *Transit) single(ctx context.Context, token, op, what string, in batchItem, value func(batchResult) string) ([]itemResult, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("encode transit %s request: %w", op, err)
	}
	code, raw, err := t.raw.Post(ctx, t.mount+"/"+op+"/"+t.key, token, body)
	if err != nil {
		return nil, vault.Wrap(what, err)
	}
	return decodeSingle(what, op, code, raw, value)
}

// decodeSingle reads a single (not batch) answer: pure, so it is fuzzed.
func decodeSingle(what, op string, code int, raw []byte, value func(batchResult) string) ([]itemResult, error) {
	if failed := vault.AnswerError(code, raw); failed != nil {
		if code == 400 {
			return []itemResult{{Err: vault.Wrap(what, failed)}}, nil
		}
		return nil, vault.Wrap(what, failed)
	}
	var sr struct {
		Data batchResult `json:"data"`
	}
	if err := json.Unmarshal(raw, &sr); err != nil {
		return nil, unusable(what, "not the expected JSON")
	}
	if value(sr.Data) == "" {
		return nil, unusable(what, "no "+op+"ed value in it")
	}
	return []itemResult{{Value: value(sr.Data)}}, nil
}
