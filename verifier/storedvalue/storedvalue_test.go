package storedvalue

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// encryptedObject builds a KMS v2 EncryptedObject the way kube-apiserver
// lays it out.
func encryptedObject(keyID string, dek []byte, srcType uint64, annotations map[string][]byte) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("ciphertext-of-the-object"))
	if keyID != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, keyID)
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, dek)
	for k, v := range annotations {
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, k)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, v)
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, entry)
	}
	if srcType != 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, srcType)
	}
	return b
}

func TestClassify(t *testing.T) {
	kid := "vaultkms.v1::transit:kms:2:1764104400"
	obj := encryptedObject(kid, []byte("vault:v2:abcd"), 1, map[string][]byte{"x.vaultkms.io": []byte("y")})
	cases := []struct {
		name  string
		raw   []byte
		want  Value
		label string
	}{
		{"protobuf plaintext", []byte("k8s\x00\x0a\x0f..."), Value{Kind: Identity}, "identity"},
		{"json plaintext", []byte(`{"apiVersion":"v1"}`), Value{Kind: JSON}, "json"},
		{"cbor plaintext", []byte("\xd9\xd9\xf7\xa4\x6aapiVersion\x62v1"), Value{Kind: CBOR}, "cbor"},
		{"aescbc", []byte("k8s:enc:aescbc:v1:key1:\x00\x01"), Value{Kind: AESCBC, Provider: "key1"}, "aescbc:key1"},
		{"aesgcm", []byte("k8s:enc:aesgcm:v1:k:\x00"), Value{Kind: AESGCM, Provider: "k"}, "aesgcm:k"},
		{"secretbox", []byte("k8s:enc:secretbox:v1:sb:xx"), Value{Kind: Secretbox, Provider: "sb"}, "secretbox:sb"},
		{"kms v1", []byte("k8s:enc:kms:v1:old:\x00\x20"), Value{Kind: KMSv1, Provider: "old"}, "kms:v1:old"},
		{"kms v2", append([]byte("k8s:enc:kms:v2:vault:"), obj...), Value{Kind: KMSv2, Provider: "vault", KeyID: kid, DEKSourceType: 1, WrappedDEKLen: 13}, "kms:v2:vault"},
		{"unknown", []byte("\xff\xfe"), Value{Kind: Unknown}, "unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Classify(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || got.Label() != tc.label {
				t.Fatalf("Classify = %+v (%s), want %+v (%s)", got, got.Label(), tc.want, tc.label)
			}
		})
	}
}

func TestClassifyMalformed(t *testing.T) {
	bad := map[string][]byte{
		"kms v2 without provider": []byte("k8s:enc:kms:v2::"),
		"kms v2 without key_id":   append([]byte("k8s:enc:kms:v2:vault:"), encryptedObject("", []byte("x"), 1, nil)...),
		"kms v2 truncated":        append([]byte("k8s:enc:kms:v2:vault:"), encryptedObject("id", []byte("x"), 1, nil)[:5]...),
		"aescbc without key":      []byte("k8s:enc:aescbc:v1:"),
	}
	for name, raw := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := Classify(raw); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Classify = %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte("k8s\x00abc"))
	f.Add([]byte("k8s:enc:aescbc:v1:key1:zz"))
	f.Add(append([]byte("k8s:enc:kms:v2:vault:"), encryptedObject("vaultkms.v1::transit:kms:1:1", []byte("vault:v1:x"), 1, nil)...))
	f.Add([]byte("k8s:enc:kms:v2:vault:\x12\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := Classify(raw)
		if err == nil && v.Kind == KMSv2 && v.KeyID == "" {
			t.Fatal("kms v2 value accepted without a key_id")
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error not marked malformed: %v", err)
		}
	})
}

// CBOR is how kube-apiserver may store objects when its CBOR serializer is
// on; such values are readable without any key and must count as plaintext.
func TestPlaintextKinds(t *testing.T) {
	for k, want := range map[Kind]bool{Identity: true, JSON: true, CBOR: true, KMSv2: false, AESCBC: false, Unknown: false} {
		if k.Plaintext() != want {
			t.Errorf("%s.Plaintext() = %v, want %v", k, !want, want)
		}
	}
}
