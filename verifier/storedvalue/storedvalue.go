// Package storedvalue tells, without decrypting anything, how kube-apiserver
// stored a value in etcd: in plaintext, or under which encryption provider
// and, for KMS v2, which key_id.
package storedvalue

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Kind is how a value is stored.
type Kind string

const (
	Identity  Kind = "identity"  // protobuf plaintext (k8s\x00)
	JSON      Kind = "json"      // JSON plaintext (custom resources)
	CBOR      Kind = "cbor"      // CBOR plaintext (self-described, tag 55799)
	AESCBC    Kind = "aescbc"    // k8s:enc:aescbc:v1:<key>:
	AESGCM    Kind = "aesgcm"    // k8s:enc:aesgcm:v1:<key>:
	Secretbox Kind = "secretbox" // k8s:enc:secretbox:v1:<key>:
	KMSv1     Kind = "kms:v1"    // k8s:enc:kms:v1:<provider>:
	KMSv2     Kind = "kms:v2"    // k8s:enc:kms:v2:<provider>:<EncryptedObject>
	Unknown   Kind = "unknown"
)

// Plaintext tells whether k stores data readable without any key.
func (k Kind) Plaintext() bool { return k == Identity || k == JSON || k == CBOR }

// cborSelfDescribed is the tag (55799) kube-apiserver's CBOR serializer
// puts before every object it stores, so a reader can tell CBOR apart.
var cborSelfDescribed = []byte{0xd9, 0xd9, 0xf7}

// Value is what Classify learned of one stored value.
type Value struct {
	Kind Kind
	// Provider is the provider name for KMS, the key name for aescbc,
	// aesgcm and secretbox.
	Provider string
	// KeyID, DEKSourceType and the lengths below are read from a KMS v2
	// EncryptedObject.
	KeyID         string
	DEKSourceType int
	// WrappedDEKLen is the length of the wrapped DEK or seed.
	WrappedDEKLen int
}

// Label renders the kind and provider as "identity", "kms:v2:vault",
// "aescbc:key1".
func (v Value) Label() string {
	if v.Provider == "" {
		return string(v.Kind)
	}
	return string(v.Kind) + ":" + v.Provider
}

const encPrefix = "k8s:enc:"

var prefixes = []struct {
	text string
	kind Kind
}{
	{"kms:v2:", KMSv2},
	{"kms:v1:", KMSv1},
	{"aescbc:v1:", AESCBC},
	{"aesgcm:v1:", AESGCM},
	{"secretbox:v1:", Secretbox},
}

// ErrMalformed marks a value that claims a format it does not follow.
var ErrMalformed = errors.New("malformed stored value")

// Classify reads the prefix and, for KMS v2, the EncryptedObject's key_id.
// It never returns any part of the encrypted data.
func Classify(raw []byte) (Value, error) {
	switch {
	case bytes.HasPrefix(raw, []byte("k8s\x00")):
		return Value{Kind: Identity}, nil
	case len(raw) > 0 && (raw[0] == '{' || raw[0] == '['):
		return Value{Kind: JSON}, nil
	case bytes.HasPrefix(raw, cborSelfDescribed):
		return Value{Kind: CBOR}, nil
	case !bytes.HasPrefix(raw, []byte(encPrefix)):
		return Value{Kind: Unknown}, nil
	}
	rest := raw[len(encPrefix):]
	for _, p := range prefixes {
		if !bytes.HasPrefix(rest, []byte(p.text)) {
			continue
		}
		rest = rest[len(p.text):]
		i := bytes.IndexByte(rest, ':')
		if i <= 0 {
			return Value{Kind: p.kind}, fmt.Errorf("%w: %s value without a provider name", ErrMalformed, p.kind)
		}
		v := Value{Kind: p.kind, Provider: string(rest[:i])}
		if p.kind == KMSv2 {
			if err := parseEncryptedObject(rest[i+1:], &v); err != nil {
				return v, err
			}
		}
		return v, nil
	}
	return Value{Kind: Unknown}, nil
}

// parseEncryptedObject reads the fields of kmsv2 EncryptedObject that matter
// here: 2 keyID, 3 encryptedDEKSource, 5 encryptedDEKSourceType. Field 1
// (the encrypted data) and 4 (annotations) are skipped unread.
func parseEncryptedObject(b []byte, v *Value) error {
	seen := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: EncryptedObject tag: %v", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			s, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("%w: EncryptedObject keyID: %v", ErrMalformed, protowire.ParseError(m))
			}
			v.KeyID, seen = string(s), true
			b = b[m:]
		case num == 3 && typ == protowire.BytesType:
			s, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("%w: EncryptedObject encryptedDEKSource: %v", ErrMalformed, protowire.ParseError(m))
			}
			v.WrappedDEKLen = len(s)
			b = b[m:]
		case num == 5 && typ == protowire.VarintType:
			x, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf("%w: EncryptedObject encryptedDEKSourceType: %v", ErrMalformed, protowire.ParseError(m))
			}
			v.DEKSourceType = int(x)
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return fmt.Errorf("%w: EncryptedObject field %d: %v", ErrMalformed, num, protowire.ParseError(m))
			}
			b = b[m:]
		}
	}
	if !seen || v.KeyID == "" {
		return fmt.Errorf("%w: EncryptedObject has no keyID", ErrMalformed)
	}
	return nil
}
