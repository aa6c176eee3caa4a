package syncer

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// hmacPrefix starts every data HMAC in status; the key's id follows, so a
// recreated key is told apart from edited data.
const hmacPrefix = "hmac-sha256:"

// hmacKeyID names an HMAC key without revealing it: a keyed hash of a
// fixed label, short enough to sit in status.
func hmacKeyID(key []byte) string {
	// A process has one key, and every pass asks for its id (twice when
	// it writes): it is worked out once.
	if last := lastKeyID.Load(); last != nil && bytes.Equal(last.key, key) {
		return last.id
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("vaultkms data hmac key id"))
	id := base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:6])
	lastKeyID.Store(&keyID{key: bytes.Clone(key), id: id})
	return id
}

// keyID is a key and its id.
type keyID struct {
	key []byte
	id  string
}

var lastKeyID atomic.Pointer[keyID]

// dataHMAC is a keyed HMAC-SHA256 over the data in key order, with the
// key's id: it tells a change apart without revealing anything of the
// values.
func dataHMAC(key []byte, data map[string][]byte) string {
	return hmacPrefix + hmacKeyID(key) + ":" + rawHMAC(key, data)
}

func rawHMAC(key []byte, data map[string][]byte) string {
	m := hmac.New(sha256.New, key)
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(m, "%d:%s%d:", len(k), k, len(data[k]))
		m.Write(data[k])
	}
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// dataState compares a Secret's data with the HMAC recorded in status.
func dataState(key []byte, recorded string, data map[string][]byte) DataState {
	if recorded == "" {
		return DataUnchanged
	}
	rest := strings.TrimPrefix(recorded, hmacPrefix)
	id, sum, withID := strings.Cut(rest, ":")
	if !withID {
		// Recorded before HMACs named their key: compare as they were.
		sum = rest
	} else if id != hmacKeyID(key) {
		return DataOtherKey
	}
	if hmac.Equal([]byte(sum), []byte(rawHMAC(key, data))) {
		return DataUnchanged
	}
	return DataEdited
}

// sourceHash fingerprints what decides the Secret's data: a change of
// anything else (labels, annotations, rollout targets, grace period,
// revokeOnDelete, expiryPolicy) never reads Vault.
func sourceHash(vs *v1alpha1.VaultSecret) string {
	if len(vs.Spec.Sources) > 0 {
		// Apart from the one-source form, whose hashes recorded in status
		// must not move with this field's arrival.
		return shortHash(struct {
			Auth     v1alpha1.Auth
			Sources  []v1alpha1.Source
			TTL      string
			Name     string
			Type     string
			Template map[string]string
		}{vs.Spec.Auth, vs.Spec.Sources, wantedTTL(vs).String(), targetName(vs), string(secretType(vs)), vs.Spec.Target.Template})
	}
	return shortHash(struct {
		Auth     v1alpha1.Auth
		Source   v1alpha1.Source
		TTL      string
		Name     string
		Type     string
		Template map[string]string
	}{vs.Spec.Auth, vs.Spec.Source, wantedTTL(vs).String(), targetName(vs), string(secretType(vs)), vs.Spec.Target.Template})
}

// metadataHash fingerprints the Secret's labels and annotations as asked.
func metadataHash(vs *v1alpha1.VaultSecret) string {
	return shortHash(struct {
		Labels, Annotations map[string]string
	}{vs.Spec.Target.Labels, vs.Spec.Target.Annotations})
}

func shortHash(v any) string {
	// Marshalling these plain structs and maps cannot fail; maps are
	// written in key order.
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// jitterFor spreads refreshes of many VaultSecrets: a stable value in
// [0, 1) from the object's UID, so a restart keeps the same spread.
func jitterFor(uid string) float64 {
	sum := sha256.Sum256([]byte(uid))
	v := uint64(sum[0])<<24 | uint64(sum[1])<<16 | uint64(sum[2])<<8 | uint64(sum[3])
	return float64(v) / float64(1<<32)
}
