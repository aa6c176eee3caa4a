package transitkey

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// KeyInfo is what vaultkms needs to know of a Transit key.
type KeyInfo struct {
	Type                 string
	LatestVersion        int
	MinDecryptionVersion int
	MinEncryptionVersion int
	// Created maps each version Vault still holds to its creation time.
	Created map[int]time.Time
}

// Read reads the versions of the Transit key mount/key.
func Read(ctx context.Context, client *api.Client, mount, key string) (KeyInfo, error) {
	mount = NormalizeMount(mount)
	op := fmt.Sprintf("read transit key %q", mount+"/"+key)
	s, err := client.Logical().ReadWithContext(ctx, mount+"/keys/"+key)
	if err != nil {
		return KeyInfo{}, vault.Wrap(op, err)
	}
	if s == nil || s.Data == nil {
		return KeyInfo{}, vault.Wrap(op, &vault.StatusError{Code: 404, Errors: []string{"transit key not found"}})
	}
	return ParseKeyInfo(s.Data)
}

// ParseKeyInfo reads the data of a GET <mount>/keys/<key> answer.
func ParseKeyInfo(d map[string]any) (KeyInfo, error) {
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
