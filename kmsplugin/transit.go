package kmsplugin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// KeyInfo is what the plugin needs to know of a Transit key.
type KeyInfo struct {
	Type                 string
	LatestVersion        int
	MinDecryptionVersion int
	MinEncryptionVersion int
	// Created maps each version Vault still holds to its creation time.
	Created map[int]time.Time
}

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
	t := &Transit{client: client, mount: strings.Trim(mount, "/"), key: key}
	if len(associatedData) > 0 {
		t.aad = base64.StdEncoding.EncodeToString(associatedData)
	}
	return t
}

// ReadKey reads the key's versions.
func (t *Transit) ReadKey(ctx context.Context) (KeyInfo, error) {
	s, err := t.client.Logical().ReadWithContext(ctx, t.mount+"/keys/"+t.key)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("read transit key %q: %w", t.mount+"/"+t.key, err)
	}
	if s == nil || s.Data == nil {
		return KeyInfo{}, fmt.Errorf("read transit key %q: %w", t.mount+"/"+t.key, &vault.StatusError{Code: 404, Errors: []string{"transit key not found"}})
	}
	return parseKeyInfo(s.Data)
}

func parseKeyInfo(d map[string]any) (KeyInfo, error) {
	var ki KeyInfo
	ki.Type, _ = d["type"].(string)
	var err error
	if ki.LatestVersion, err = jsonInt(d["latest_version"]); err != nil {
		return KeyInfo{}, fmt.Errorf("transit key latest_version: %w", err)
	}
	if ki.MinDecryptionVersion, err = jsonInt(d["min_decryption_version"]); err != nil {
		return KeyInfo{}, fmt.Errorf("transit key min_decryption_version: %w", err)
	}
	if ki.MinEncryptionVersion, err = jsonInt(d["min_encryption_version"]); err != nil {
		return KeyInfo{}, fmt.Errorf("transit key min_encryption_version: %w", err)
	}
	keys, ok := d["keys"].(map[string]any)
	if !ok {
		return KeyInfo{}, fmt.Errorf("transit key has no keys map")
	}
	ki.Created = make(map[int]time.Time, len(keys))
	for v, raw := range keys {
		n, err := strconv.Atoi(v)
		if err != nil {
			return KeyInfo{}, fmt.Errorf("transit key version %q: %w", v, err)
		}
		// Symmetric keys report Unix seconds; asymmetric ones an object
		// with creation_time in RFC 3339.
		switch c := raw.(type) {
		case map[string]any:
			ts, _ := c["creation_time"].(string)
			tm, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				return KeyInfo{}, fmt.Errorf("transit key version %d creation_time: %w", n, err)
			}
			ki.Created[n] = tm.UTC()
		default:
			sec, err := jsonInt(c)
			if err != nil {
				return KeyInfo{}, fmt.Errorf("transit key version %d creation time: %w", n, err)
			}
			ki.Created[n] = time.Unix(int64(sec), 0).UTC()
		}
	}
	if ki.LatestVersion < 1 {
		return KeyInfo{}, fmt.Errorf("transit key latest_version %d is not positive", ki.LatestVersion)
	}
	if _, ok := ki.Created[ki.LatestVersion]; !ok {
		return KeyInfo{}, fmt.Errorf("transit key lists no creation time for its latest version %d", ki.LatestVersion)
	}
	return ki, nil
}

// Versions lists the versions Vault still holds, oldest first.
func (k KeyInfo) Versions() []int {
	vs := make([]int, 0, len(k.Created))
	for v := range k.Created {
		vs = append(vs, v)
	}
	sort.Ints(vs)
	return vs
}

func jsonInt(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	case int64:
		return int(n), nil
	case nil:
		return 0, fmt.Errorf("missing")
	}
	return 0, fmt.Errorf("unexpected type %T", v)
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
func (t *Transit) EncryptBatch(ctx context.Context, items []encryptItem) ([]itemResult, error) {
	in := make([]batchItem, len(items))
	for i, it := range items {
		in[i] = batchItem{Plaintext: base64.StdEncoding.EncodeToString(it.plaintext), KeyVersion: it.version, AssociatedData: t.aad}
	}
	return t.batch(ctx, "encrypt", in, func(r batchResult) string { return r.Ciphertext })
}

// DecryptBatch unwraps each Transit ciphertext; results hold base64 plaintext.
func (t *Transit) DecryptBatch(ctx context.Context, ciphertexts []string) ([]itemResult, error) {
	in := make([]batchItem, len(ciphertexts))
	for i, c := range ciphertexts {
		in[i] = batchItem{Ciphertext: c, AssociatedData: t.aad}
	}
	return t.batch(ctx, "decrypt", in, func(r batchResult) string { return r.Plaintext })
}

func (t *Transit) batch(ctx context.Context, op string, in []batchItem, value func(batchResult) string) ([]itemResult, error) {
	body, err := json.Marshal(map[string]any{"batch_input": in, "partial_failure_response_code": 200})
	if err != nil {
		return nil, fmt.Errorf("encode transit %s request: %w", op, err)
	}
	path := t.mount + "/" + op + "/" + t.key
	resp, err := t.client.Logical().WriteRawWithContext(ctx, path, body)
	if resp != nil {
		defer resp.Body.Close()
	}
	// Vault answers 400 with every item's error when all of them failed;
	// those answers still carry per-item results worth reading.
	if err != nil && (resp == nil || resp.StatusCode != 400) {
		return nil, fmt.Errorf("transit %s with key %q: %w", op, t.mount+"/"+t.key, err)
	}
	raw, rerr := io.ReadAll(resp.Body)
	if rerr != nil {
		return nil, fmt.Errorf("read transit %s response: %w", op, rerr)
	}
	var br batchResponse
	if jerr := json.Unmarshal(raw, &br); jerr != nil {
		return nil, fmt.Errorf("decode transit %s response: %w", op, jerr)
	}
	if len(br.Data.BatchResults) != len(in) {
		if err != nil {
			return nil, fmt.Errorf("transit %s with key %q: %w", op, t.mount+"/"+t.key, err)
		}
		return nil, fmt.Errorf("transit %s returned %d results for %d items", op, len(br.Data.BatchResults), len(in))
	}
	out := make([]itemResult, len(in))
	for i, r := range br.Data.BatchResults {
		if r.Error != "" {
			out[i].Err = &vault.StatusError{Code: 400, Errors: []string{r.Error}}
			continue
		}
		out[i].Value = value(r)
	}
	return out, nil
}
