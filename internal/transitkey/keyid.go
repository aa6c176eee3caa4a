// Package transitkey names Transit key versions the way vaultkms records
// them (the key_id kube-apiserver stores beside every object) and reads a
// Transit key's versions. It is a leaf: the plugin, the verifier and the
// controller share it without linking each other.
package transitkey

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// KeyIDPrefix starts every key_id vaultkms reports. The number after the
// dot is the format's version, so the format can change without ambiguity.
const KeyIDPrefix = "vaultkms.v1"

// KeyID names one version of one Transit key, precisely enough that a key
// deleted and created again under the same name never yields an old key_id:
// the version's creation time differs.
//
// Its text form, which kube-apiserver stores next to every object and which
// the verifier parses, is
//
//	vaultkms.v1:<namespace>:<mount>:<key>:<version>:<created>
//
// where namespace is the Vault namespace (empty for root), mount the Transit
// mount path, key the Transit key name, version the key version as a
// decimal, and created the version's creation time in Unix seconds. In the
// three text fields '%' and ':' are written as %25 and %3A.
type KeyID struct {
	Namespace string
	Mount     string
	Key       string
	Version   int
	Created   time.Time
}

// NewKeyID is the one way to build a KeyID: it normalises the mount and
// the namespace, so "transit/" and "transit" (or "root" and "") yield the
// same key_id text. The plugin reports that text and kube-apiserver stores
// it; a verifier that spelled the mount as given would never match it.
func NewKeyID(namespace, mount, key string, version int, created time.Time) KeyID {
	return KeyID{
		Namespace: NormalizeNamespace(namespace),
		Mount:     NormalizeMount(mount),
		Key:       key,
		Version:   version,
		Created:   created,
	}
}

func (k KeyID) String() string {
	return strings.Join([]string{
		KeyIDPrefix,
		escapeField(k.Namespace),
		escapeField(k.Mount),
		escapeField(k.Key),
		strconv.Itoa(k.Version),
		strconv.FormatInt(k.Created.Unix(), 10),
	}, ":")
}

// SameKey tells whether o names a version of the same Transit key,
// however the mount and namespace were spelled ("transit/" and "transit"
// name the same mount).
func (k KeyID) SameKey(o KeyID) bool {
	a, b := k.Normalized(), o.Normalized()
	return a.Namespace == b.Namespace && a.Mount == b.Mount && a.Key == b.Key
}

// Normalized returns k with its mount and namespace in canonical form, the
// form vaultkms records.
func (k KeyID) Normalized() KeyID {
	k.Namespace = NormalizeNamespace(k.Namespace)
	k.Mount = NormalizeMount(k.Mount)
	return k
}

// NormalizeMount returns a Transit mount path in the one form vaultkms
// records: no leading or trailing slash, no empty segments
// ("/transit/" and "transit" are the same mount to Vault).
func NormalizeMount(m string) string { return normalizePath(m) }

// NormalizeNamespace returns a Vault namespace path in canonical form: no
// leading or trailing slash, no empty segments; "root" and "" are both the
// root namespace and become "".
func NormalizeNamespace(ns string) string {
	ns = normalizePath(ns)
	if ns == "root" {
		return ""
	}
	return ns
}

func normalizePath(p string) string {
	parts := strings.Split(strings.TrimSpace(p), "/")
	out := parts[:0]
	for _, s := range parts {
		if s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, "/")
}

// ParseKeyID parses the text form of a KeyID.
func ParseKeyID(s string) (KeyID, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 6 || parts[0] != KeyIDPrefix {
		return KeyID{}, fmt.Errorf("key_id is not in the %s format (%s:<namespace>:<mount>:<key>:<version>:<created>)", KeyIDPrefix, KeyIDPrefix)
	}
	var k KeyID
	var err error
	if k.Namespace, err = unescapeField(parts[1]); err != nil {
		return KeyID{}, fmt.Errorf("key_id namespace: %w", err)
	}
	if k.Mount, err = unescapeField(parts[2]); err != nil {
		return KeyID{}, fmt.Errorf("key_id mount: %w", err)
	}
	if k.Key, err = unescapeField(parts[3]); err != nil {
		return KeyID{}, fmt.Errorf("key_id key: %w", err)
	}
	if k.Mount == "" || k.Key == "" {
		return KeyID{}, fmt.Errorf("key_id has an empty mount or key name")
	}
	if k.Version, err = strconv.Atoi(parts[4]); err != nil || k.Version < 1 || parts[4] != strconv.Itoa(k.Version) {
		return KeyID{}, fmt.Errorf("key_id version %q is not a positive decimal", parts[4])
	}
	created, err := strconv.ParseInt(parts[5], 10, 64)
	if err != nil || created < 0 || parts[5] != strconv.FormatInt(created, 10) {
		return KeyID{}, fmt.Errorf("key_id creation time %q is not Unix seconds", parts[5])
	}
	k.Created = time.Unix(created, 0).UTC()
	return k, nil
}

func escapeField(s string) string {
	if !strings.ContainsAny(s, "%:") {
		return s
	}
	return strings.NewReplacer("%", "%25", ":", "%3A").Replace(s)
}

func unescapeField(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "%25"):
			b.WriteByte('%')
		case strings.HasPrefix(s[i:], "%3A"):
			b.WriteByte(':')
		default:
			return "", fmt.Errorf("bad escape in %q", s)
		}
		i += 2
	}
	return b.String(), nil
}

// CiphertextVersion reads N from a Transit ciphertext "vault:vN:...".
func CiphertextVersion(ct string) (int, error) {
	rest, ok := strings.CutPrefix(ct, "vault:v")
	if !ok {
		return 0, fmt.Errorf("ciphertext is not a Transit ciphertext (no vault:v prefix)")
	}
	num, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, fmt.Errorf("ciphertext has no version separator")
	}
	v, err := strconv.Atoi(num)
	if err != nil || v < 1 || num != strconv.Itoa(v) {
		return 0, fmt.Errorf("ciphertext version is not a positive decimal")
	}
	return v, nil
}
