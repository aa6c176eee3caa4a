package main

import (
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// The cache holds every managed VaultSecret and Secret, decoded from JSON
// one by one, so each repeats in its own allocation what thousands of
// others hold too: the namespace, the managed-by label, the expiry
// annotation's key, the owner reference's group and kind, the condition
// type and reason. Ten thousand of each made a third of the cache's bytes
// such copies. The cache transforms point them at one shared copy.
//
// A shared label map is safe for the same reason the cache itself is:
// nothing may modify a cached object (every read deep-copies it, and the
// few readers that do not copy only read).

const (
	// internMaxLen: longer strings are names and hashes, rarely shared.
	internMaxLen = 128
	// internMaxEntries bounds the table whatever tenants write: when it
	// is full it starts over (what was shared stays shared).
	internMaxEntries = 4096
	// internMaxMapLen: label maps longer than this are not shared.
	internMaxMapLen = 8
)

// interner hands out one shared copy of equal strings and small maps.
type interner struct {
	mu   sync.Mutex
	strs map[string]string
	maps map[string]map[string]string
}

// str returns the shared copy of s.
func (t *interner) str(s string) string {
	if s == "" || len(s) > internMaxLen {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.strs[s]; ok {
		return c
	}
	if t.strs == nil || len(t.strs) >= internMaxEntries {
		t.strs = make(map[string]string, 256)
	}
	t.strs[s] = s
	return s
}

// strs shares each string of the slice, in place.
func (t *interner) each(ss []string) {
	for i, s := range ss {
		ss[i] = t.str(s)
	}
}

// keys shares m's keys and leaves its values as they were: the keys of
// annotations repeat, their values (times, hashes) mostly not. It works in
// place (an assignment keeps a map's old key, so each is deleted and put
// back), since the transform runs on every watch event and a new map per
// event would cost more than the keys save.
func (t *interner) keys(m map[string]string) map[string]string {
	var buf [8]string
	ks := buf[:0]
	for k := range m {
		ks = append(ks, k)
	}
	for _, k := range ks {
		if c := t.str(k); unsafe.StringData(c) != unsafe.StringData(k) {
			v := m[k]
			delete(m, k)
			m[c] = v
		}
	}
	return m
}

// labels returns one shared map for all maps of the same entries (a
// Secret's labels are mostly the managed-by label and a team's few).
func (t *interner) labels(m map[string]string) map[string]string {
	if len(m) == 0 || len(m) > internMaxMapLen {
		return t.keys(m)
	}
	ks := make([]string, 0, len(m))
	size := 0
	for k, v := range m {
		ks = append(ks, k)
		size += len(k) + len(v) + 2
	}
	if size > internMaxLen*internMaxMapLen {
		return t.keys(m)
	}
	slices.Sort(ks)
	var b strings.Builder
	b.Grow(size)
	for _, k := range ks {
		// Label keys and values cannot hold a NUL, so this spelling is
		// one map's alone.
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	id := b.String()
	t.mu.Lock()
	if c, ok := t.maps[id]; ok {
		t.mu.Unlock()
		return c
	}
	t.mu.Unlock()
	shared := make(map[string]string, len(m))
	for k, v := range m {
		shared[t.str(k)] = t.str(v)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.maps[id]; ok {
		return c
	}
	if t.maps == nil || len(t.maps) >= internMaxEntries {
		t.maps = make(map[string]map[string]string, 64)
	}
	t.maps[id] = shared
	return shared
}
