package syncer

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func twoKV() []v1alpha1.Source {
	return []v1alpha1.Source{
		{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}},
		{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/extra"}},
	}
}

func statusFor(specs []v1alpha1.Source, refresh ...time.Time) []v1alpha1.SourceStatus {
	st := make([]v1alpha1.SourceStatus, len(specs))
	for i := range specs {
		st[i] = v1alpha1.SourceStatus{Hash: sourceSpecHash(&specs[i]), RefreshAt: ptrTime(refresh[i])}
	}
	return st
}

func TestDueSources(t *testing.T) {
	specs := twoKV()
	edited := twoKV()
	edited[1].KV.Path = "app/other"
	cases := []struct {
		name  string
		specs []v1alpha1.Source
		st    []v1alpha1.SourceStatus
		all   bool
		tmpl  map[string]string
		want  []int
	}{
		{"none due", specs, statusFor(specs, t0.Add(time.Minute), t0.Add(time.Minute)), false, nil, []int{}},
		{"only the second due: only it is read", specs, statusFor(specs, t0.Add(time.Minute), t0), false, nil, []int{1}},
		{"a template key shadows a key of the first: it is read too", specs, func() []v1alpha1.SourceStatus {
			st := statusFor(specs, t0.Add(time.Minute), t0)
			st[0].Keys = []string{"url"}
			return st
		}(), false, map[string]string{"url": "https://{{ .url }}"}, []int{0, 1}},
		{"a template of other keys reads nothing more", specs, func() []v1alpha1.SourceStatus {
			st := statusFor(specs, t0.Add(time.Minute), t0)
			st[0].Keys = []string{"host"}
			return st
		}(), false, map[string]string{"url": "https://{{ .host }}"}, []int{1}},
		{"all asked", specs, statusFor(specs, t0.Add(time.Minute), t0.Add(time.Minute)), true, nil, []int{0, 1}},
		{"no status yet", specs, nil, false, nil, []int{0, 1}},
		{"a source added", append(twoKV(), v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "c"}}), statusFor(specs, t0.Add(time.Minute), t0.Add(time.Minute)), false, nil, []int{0, 1, 2}},
		{"one source's spec edited", edited, statusFor(specs, t0.Add(time.Minute), t0.Add(time.Minute)), false, nil, []int{1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := DueSources(tc.specs, tc.st, tc.all, tc.tmpl, t0); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("DueSources = %v, want %v", got, tc.want)
			}
		})
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
