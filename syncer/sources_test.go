package syncer

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func twoKV() []v1alpha1.Source {
	return []v1alpha1.Source{
		{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}},
		{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/extra"}},
	}
}

func TestMergeSources(t *testing.T) {
	specs := twoKV()
	st := []v1alpha1.SourceStatus{{Keys: []string{"a", "b"}}, {Keys: []string{"c"}}}
	current := map[string][]byte{"a": []byte("1"), "b": []byte("2"), "c": []byte("3"), "rendered": []byte("x")}
	b := func(s string) []byte { return []byte(s) }
	cases := []struct {
		name     string
		fresh    map[int]map[string][]byte
		want     map[string][]byte
		keys     [][]string
		conflict string
	}{
		{"second read: the first's keys kept from the Secret", map[int]map[string][]byte{1: {"c": b("new"), "d": b("4")}},
			map[string][]byte{"a": b("1"), "b": b("2"), "c": b("new"), "d": b("4")}, [][]string{{"a", "b"}, {"c", "d"}}, ""},
		{"a key gone from a source leaves the Secret", map[int]map[string][]byte{0: {"a": b("9")}},
			map[string][]byte{"a": b("9"), "c": b("3")}, [][]string{{"a"}, {"c"}}, ""},
		{"both read", map[int]map[string][]byte{0: {"a": b("1")}, 1: {"z": b("2")}},
			map[string][]byte{"a": b("1"), "z": b("2")}, [][]string{{"a"}, {"z"}}, ""},
		{"the same key from two sources", map[int]map[string][]byte{1: {"b": b("other")}}, nil, nil,
			`key "b" is given by both spec.sources[0] (kv secret/app/config) and spec.sources[1] (kv secret/app/extra)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, keys, err := MergeSources(specs, st, current, tc.fresh)
			if tc.conflict != "" {
				var kc *KeyConflictError
				if !errors.As(err, &kc) || !strings.Contains(err.Error(), tc.conflict) {
					t.Fatalf("err = %v, want a KeyConflictError saying %q", err, tc.conflict)
				}
				if strings.Contains(err.Error(), "other") {
					t.Fatal("the conflict message holds a value")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) || !reflect.DeepEqual(keys, tc.keys) {
				t.Fatalf("merged %v keys %v, want %v keys %v", got, keys, tc.want, tc.keys)
			}
		})
	}
}
