package syncer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// ReasonKeyConflict: two of spec.sources give the same key; no Secret is
// written until one of them stops.
const ReasonKeyConflict = "KeyConflict"

// multiKind is a VaultSecret of spec.sources: each source is read on its
// own schedule by syncSources, never through this kind's fetch. It leases
// when one of its sources is dynamic (each with a journal of its own).
type multiKind struct{ dynamic bool }

func (multiKind) name() string { return "sources" }
func (multiKind) fetch(context.Context, *api.Client, *v1alpha1.VaultSecret, *v1alpha1.Source) (fetched, error) {
	return fetched{}, errors.New("spec.sources are read one by one")
}
func (multiKind) plan(time.Time, *v1alpha1.VaultSecret, fetched, time.Time) (time.Time, time.Time) {
	return time.Time{}, time.Time{}
}
func (k multiKind) leased() bool { return k.dynamic }

// sourceLabel names a source in messages: its index and path, never data.
func sourceLabel(i int, src *v1alpha1.Source) string {
	switch {
	case src.KV != nil:
		return fmt.Sprintf("spec.sources[%d] (kv %s/%s)", i, src.KV.Mount, src.KV.Path)
	case src.PKI != nil:
		return fmt.Sprintf("spec.sources[%d] (pki %s/issue/%s)", i, src.PKI.Mount, src.PKI.Role)
	case src.Dynamic != nil:
		return fmt.Sprintf("spec.sources[%d] (dynamic %s/%s)", i, src.Dynamic.Mount, src.Dynamic.Path)
	}
	return fmt.Sprintf("spec.sources[%d]", i)
}

// sourceSpecHash fingerprints one source's spec.
func sourceSpecHash(src *v1alpha1.Source) string { return shortHash(src) }

// shadowed tells whether a template key is one of keys: the Secret then
// holds the template's output under it, not the source's value.
func shadowed(keys []string, templated map[string]string) bool {
	for _, k := range keys {
		if _, ok := templated[k]; ok {
			return true
		}
	}
	return false
}

// KeyConflictError is one key given by two sources.
type KeyConflictError struct {
	Key         string
	First, Then string
}

func (e *KeyConflictError) Error() string {
	return fmt.Sprintf("key %q is given by both %s and %s; no Secret is written until only one gives it (rename the key in Vault, or split the sources into two VaultSecrets)", e.Key, e.First, e.Then)
}

// MergeSources is the Secret's raw data (before templates): for a source
// read now, what it gave; for the others, their keys as the Secret holds
// them. It returns each source's keys, or a KeyConflictError naming the
// first key two sources share.
func MergeSources(specs []v1alpha1.Source, st []v1alpha1.SourceStatus, current map[string][]byte, fresh map[int]map[string][]byte) (map[string][]byte, [][]string, error) {
	data := map[string][]byte{}
	from := map[string]int{}
	keys := make([][]string, len(specs))
	for i := range specs {
		got, read := fresh[i]
		if !read {
			got = map[string][]byte{}
			if i < len(st) {
				for _, k := range st[i].Keys {
					if v, ok := current[k]; ok {
						got[k] = v
					}
				}
			}
		}
		names := make([]string, 0, len(got))
		for k := range got {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if j, dup := from[k]; dup {
				return nil, nil, &KeyConflictError{Key: k, First: sourceLabel(j, &specs[j]), Then: sourceLabel(i, &specs[i])}
			}
			from[k], data[k] = i, got[k]
		}
		keys[i] = names
	}
	return data, keys, nil
}
