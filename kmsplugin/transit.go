package kmsplugin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"

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
	mount  string
	key    string
	aad    string // base64 associated data, or empty
}

// NewTransit returns a Transit client for mount/key. associatedData, when
// set, is bound to every ciphertext.
func NewTransit(client *api.Client, mount, key string, associatedData []byte) *Transit {
	t := &Transit{client: client, mount: transitkey.NormalizeMount(mount), key: key}
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
	Plaintext      string `json:"plaintext,omitempty"`
	Ciphertext     string `json:"ciphertext,omitempty"`
	KeyVersion     int    `json:"key_version,omitempty"`
	AssociatedData string `json:"associated_data,omitempty"`
}

type batchResponse struct {
	Data struct {
		BatchResults []batchResult `json:"batch_results"`
	} `json:"data"`
}

type batchResult struct {
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
	body, err := json.Marshal(map[string]any{"batch_input": in, "partial_failure_response_code": 200})
	if err != nil {
		return nil, fmt.Errorf("encode transit %s request: %w", op, err)
	}
	what := fmt.Sprintf("transit %s with key %q", op, t.mount+"/"+t.key)
	// The token is the one the caller will report if Vault refuses it, so
	// a re-login is tied to the token that was actually refused.
	r := t.client.NewRequest("POST", "/v1/"+t.mount+"/"+op+"/"+t.key)
	r.ClientToken = token
	r.BodyBytes = body
	//nolint:staticcheck // RawRequestWithContext is the api's way to send a request with its own token.
	resp, err := t.client.RawRequestWithContext(ctx, r)
	if resp != nil {
		defer resp.Body.Close()
	}
	// Vault answers 400 with every item's error when all of them failed;
	// those answers still carry per-item results worth reading.
	if err != nil && (resp == nil || resp.StatusCode != 400) {
		return nil, vault.Wrap(what, err)
	}
	raw, rerr := io.ReadAll(resp.Body)
	if rerr != nil {
		return nil, vault.Wrap("read the answer of "+what, rerr)
	}
	var br batchResponse
	if jerr := json.Unmarshal(raw, &br); jerr != nil {
		return nil, &vault.Error{Kind: vault.KindOther, Op: what, Detail: "vault's answer is not the expected JSON"}
	}
	if len(br.Data.BatchResults) != len(in) {
		if err != nil {
			return nil, vault.Wrap(what, err)
		}
		return nil, &vault.Error{Kind: vault.KindOther, Op: what, Detail: fmt.Sprintf("vault returned %d results for %d items", len(br.Data.BatchResults), len(in))}
	}
	out := make([]itemResult, len(in))
	for i, r := range br.Data.BatchResults {
		if r.Error != "" {
			out[i].Err = vault.Wrap(what, &vault.StatusError{Code: 400, Errors: []string{r.Error}})
			continue
		}
		out[i].Value = value(r)
	}
	return out, nil
}
