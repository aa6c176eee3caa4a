package transitkey

import (
	"strings"
	"testing"
	"time"
)

func TestKeyIDRoundTrip(t *testing.T) {
	created := time.Unix(1764104400, 0).UTC()
	cases := []struct {
		name string
		id   KeyID
		text string
	}{
		{"root namespace", KeyID{Mount: "transit", Key: "kms", Version: 3, Created: created}, "vaultkms.v1::transit:kms:3:1764104400"},
		{"namespace and nested mount", KeyID{Namespace: "team/a", Mount: "kms/transit", Key: "k8s", Version: 1, Created: created}, "vaultkms.v1:team/a:kms/transit:k8s:1:1764104400"},
		{"colons and percents escaped", KeyID{Namespace: "a:b", Mount: "m%1", Key: "k", Version: 12, Created: created}, "vaultkms.v1:a%3Ab:m%251:k:12:1764104400"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.id.String(); got != tc.text {
				t.Fatalf("String() = %q, want %q", got, tc.text)
			}
			back, err := ParseKeyID(tc.text)
			if err != nil {
				t.Fatalf("ParseKeyID: %v", err)
			}
			if back != tc.id {
				t.Fatalf("ParseKeyID = %+v, want %+v", back, tc.id)
			}
		})
	}
}

func TestKeyIDDiffersWhenKeyIsRecreated(t *testing.T) {
	a := KeyID{Mount: "transit", Key: "kms", Version: 1, Created: time.Unix(100, 0)}
	b := a
	b.Created = time.Unix(200, 0)
	if a.String() == b.String() {
		t.Fatal("a recreated key's version 1 must not repeat the old key_id")
	}
	if !a.SameKey(b) {
		t.Fatal("SameKey must compare only namespace, mount and key")
	}
}

func TestParseKeyIDRejects(t *testing.T) {
	bad := map[string]string{
		"empty":           "",
		"other prefix":    "vault:v1::transit:kms:3:1",
		"too few fields":  "vaultkms.v1::transit:kms:3",
		"too many fields": "vaultkms.v1::transit:kms:3:1:x",
		"zero version":    "vaultkms.v1::transit:kms:0:1",
		"padded version":  "vaultkms.v1::transit:kms:03:1",
		"negative time":   "vaultkms.v1::transit:kms:3:-1",
		"empty key":       "vaultkms.v1::transit::3:1",
		"bad escape":      "vaultkms.v1::tr%2Fansit:kms:3:1",
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseKeyID(s); err == nil {
				t.Fatalf("ParseKeyID(%q) succeeded", s)
			}
		})
	}
}

func TestCiphertextVersion(t *testing.T) {
	cases := map[string]int{"vault:v1:abc": 1, "vault:v27:": 27}
	for ct, want := range cases {
		if got, err := CiphertextVersion(ct); err != nil || got != want {
			t.Errorf("CiphertextVersion(%q) = %d, %v; want %d", ct, got, err, want)
		}
	}
	for _, ct := range []string{"", "vault:", "vault:v:x", "vault:v0:x", "vault:v1", "vault:v01:x", "v1:abc"} {
		if _, err := CiphertextVersion(ct); err == nil {
			t.Errorf("CiphertextVersion(%q) succeeded", ct)
		}
	}
}

func FuzzParseKeyID(f *testing.F) {
	f.Add("vaultkms.v1::transit:kms:3:1764104400")
	f.Add("vaultkms.v1:a%3Ab:m%251:k:12:1")
	f.Add("vaultkms.v1:%:::0:")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseKeyID(s)
		if err != nil {
			return
		}
		// Whatever parses must print back to something that parses to
		// the same key.
		again, err := ParseKeyID(id.String())
		if err != nil || again != id {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		if strings.Count(id.String(), ":") != 5 {
			t.Fatalf("%q has escaped fields that leak colons", id.String())
		}
	})
}

func FuzzCiphertextVersion(f *testing.F) {
	f.Add("vault:v1:abc")
	f.Add("vault:v99999999999999999999:x")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := CiphertextVersion(s)
		if err == nil && v < 1 {
			t.Fatalf("version %d accepted from %q", v, s)
		}
	})
}

func FuzzParseKeyInfo(f *testing.F) {
	f.Add(int64(3), int64(1), "1", int64(100), "3", int64(300))
	f.Fuzz(func(t *testing.T, latest, minDec int64, v1 string, c1 int64, v2 string, c2 int64) {
		d := map[string]any{
			"type": "aes256-gcm96", "latest_version": float64(latest),
			"min_decryption_version": float64(minDec), "min_encryption_version": float64(0),
			"keys": map[string]any{v1: float64(c1), v2: map[string]any{"creation_time": "2026-01-01T00:00:00Z"}},
		}
		ki, err := ParseKeyInfo(d)
		if err != nil {
			return
		}
		if _, ok := ki.Created[ki.LatestVersion]; !ok || ki.LatestVersion < 1 {
			t.Fatalf("accepted key info without a usable latest version: %+v", ki)
		}
	})
}

func TestNormalizeAndSameKey(t *testing.T) {
	for in, want := range map[string]string{"transit": "transit", "transit/": "transit", "/transit/": "transit", "kms//transit/": "kms/transit", " transit ": "transit"} {
		if got := NormalizeMount(in); got != want {
			t.Errorf("NormalizeMount(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"": "", "root": "", "/root/": "", "team-a/": "team-a", "a//b": "a/b"} {
		if got := NormalizeNamespace(in); got != want {
			t.Errorf("NormalizeNamespace(%q) = %q, want %q", in, got, want)
		}
	}
	stored := KeyID{Namespace: "team-a/", Mount: "transit/", Key: "kms", Version: 1}
	now := KeyID{Namespace: "team-a", Mount: "transit", Key: "kms", Version: 2}
	if !stored.SameKey(now) {
		t.Fatal("a key_id recorded with trailing slashes must name the same key")
	}
	if stored.SameKey(KeyID{Namespace: "team-a", Mount: "transit2", Key: "kms"}) || stored.SameKey(KeyID{Mount: "transit", Key: "kms"}) {
		t.Fatal("a different mount or namespace is a different key")
	}
}

func TestNewKeyIDOneSpellingPerKey(t *testing.T) {
	created := time.Unix(1764104400, 0).UTC()
	want := "vaultkms.v1:team/a:transit:kms:2:1764104400"
	spellings := []struct{ namespace, mount string }{
		{"team/a", "transit"},
		{"team/a/", "transit/"},
		{"/team/a", "/transit/"},
		{"team//a", "transit//"},
		{" team/a ", " transit "},
	}
	for _, s := range spellings {
		if got := NewKeyID(s.namespace, s.mount, "kms", 2, created).String(); got != want {
			t.Errorf("NewKeyID(%q, %q) = %q, want %q", s.namespace, s.mount, got, want)
		}
	}
	for _, root := range []string{"", "root", "/root/", "/"} {
		if got := NewKeyID(root, "transit", "kms", 2, created).Namespace; got != "" {
			t.Errorf("NewKeyID(namespace %q).Namespace = %q, want the root namespace \"\"", root, got)
		}
	}
}
