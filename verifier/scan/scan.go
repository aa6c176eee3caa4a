// Package scan reads etcd read-only, one consistent revision at a time in
// bounded pages, and counts how each object of the chosen resources is
// stored: plaintext, under which provider, under which KMS v2 key_id.
package scan

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

// Resource names what to scan: "secrets", "configmaps", or a custom
// resource as "<plural>.<group>" ("widgets.example.com").
type Resource string

// KeyPrefix is where kube-apiserver stores the resource under prefix.
// Core resources live at <prefix>/<plural>/, grouped ones at
// <prefix>/<group>/<plural>/.
func (r Resource) KeyPrefix(prefix string) string {
	prefix = strings.TrimSuffix(prefix, "/")
	plural, group, grouped := strings.Cut(string(r), ".")
	if !grouped {
		return prefix + "/" + plural + "/"
	}
	return prefix + "/" + group + "/" + plural + "/"
}

// ParseResources splits a --resources value.
func ParseResources(s string) ([]Resource, error) {
	var out []Resource
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if strings.ContainsAny(part, "/ ") {
			return nil, fmt.Errorf("--resources: %q is not a resource name (use secrets, configmaps or <plural>.<group>)", part)
		}
		out = append(out, Resource(part))
	}
	if len(out) == 0 {
		return nil, errors.New("--resources is empty: name at least one resource, such as secrets")
	}
	return out, nil
}

// Counts is what a scan found for one resource. These JSON names are an
// interface scripts rely on.
type Counts struct {
	Resource   string         `json:"resource"`
	Total      int            `json:"total"`
	Plaintext  int            `json:"plaintext"`
	Stale      int            `json:"stale"`
	Current    int            `json:"current"`
	Malformed  int            `json:"malformed,omitempty"`
	ByProvider map[string]int `json:"byProvider"`
	ByKeyID    map[string]int `json:"byKeyID"`
}

// Report is one scan's result.
type Report struct {
	CurrentKeyID string    `json:"currentKeyID"`
	Revision     int64     `json:"revision"`
	ScannedAt    time.Time `json:"scannedAt"`
	Resources    []Counts  `json:"resources"`
	// Restarts counts scans begun again because etcd compacted the
	// revision being read.
	Restarts int `json:"restarts,omitempty"`
}

// Stale sums the stale objects of every resource.
func (r Report) Stale() int {
	n := 0
	for _, c := range r.Resources {
		n += c.Stale
	}
	return n
}

// ByKeyID sums the objects of every resource per stored key_id.
func (r Report) ByKeyID() map[string]int {
	out := map[string]int{}
	for _, c := range r.Resources {
		for k, n := range c.ByKeyID {
			out[k] += n
		}
	}
	return out
}

// Plaintext sums the plaintext objects of every resource.
func (r Report) Plaintext() int {
	n := 0
	for _, c := range r.Resources {
		n += c.Plaintext
	}
	return n
}

// Options configures a scan.
type Options struct {
	Prefix    string // default /registry
	Resources []Resource
	// Provider is the KMS v2 provider name that counts as current; empty
	// accepts any provider whose key_id matches.
	Provider string
	// CurrentKeyID is the key_id that counts as current; empty makes
	// every KMS v2 object stale.
	CurrentKeyID string
	PageSize     int64 // default 500
	// Progress, when set, is told the number of keys read so far.
	Progress func(resource string, done int)
	// OnRestart, when set, is told that compaction forced a new start.
	OnRestart func(compactedRev int64)
	// Visit, when set, sees each classified key (for reencrypt). It must
	// not keep value.
	Visit func(resource string, key []byte, v storedvalue.Value, stale bool)
}

// KV is the part of the etcd client a scan uses: reads only.
type KV interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
}

// Run scans every resource at one revision. If etcd compacts that revision
// mid-scan, the scan starts over at the newest revision and says so.
func Run(ctx context.Context, kv KV, opts Options) (Report, error) {
	if opts.Prefix == "" {
		opts.Prefix = "/registry"
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	rep := Report{CurrentKeyID: opts.CurrentKeyID}
	for attempt := 0; ; attempt++ {
		rev, counts, err := scanAt(ctx, kv, opts)
		if errors.Is(err, rpctypes.ErrCompacted) && attempt < 5 {
			rep.Restarts++
			if opts.OnRestart != nil {
				opts.OnRestart(rev)
			}
			continue
		}
		if err != nil {
			return Report{}, err
		}
		rep.Revision, rep.Resources, rep.ScannedAt = rev, counts, time.Now().UTC()
		return rep, nil
	}
}

// scanAt reads all resources at the revision of its first read.
func scanAt(ctx context.Context, kv KV, opts Options) (int64, []Counts, error) {
	var rev int64
	var out []Counts
	for _, res := range opts.Resources {
		c := Counts{Resource: string(res), ByProvider: map[string]int{}, ByKeyID: map[string]int{}}
		prefix := res.KeyPrefix(opts.Prefix)
		end := clientv3.GetPrefixRangeEnd(prefix)
		from := prefix
		for {
			ops := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(opts.PageSize), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
			if rev != 0 {
				ops = append(ops, clientv3.WithRev(rev))
			}
			resp, err := kv.Get(ctx, from, ops...)
			if err != nil {
				return rev, nil, fmt.Errorf("read %s from etcd at revision %d: %w", prefix, rev, err)
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			for _, item := range resp.Kvs {
				classify(&c, opts, item.Key, item.Value)
			}
			if opts.Progress != nil {
				opts.Progress(string(res), c.Total)
			}
			if !resp.More || len(resp.Kvs) == 0 {
				break
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
		out = append(out, c)
	}
	return rev, out, nil
}

func classify(c *Counts, opts Options, key, value []byte) {
	c.Total++
	v, err := storedvalue.Classify(value)
	if err != nil {
		c.Malformed++
	}
	c.ByProvider[v.Label()]++
	stale := true
	switch {
	case v.Kind.Plaintext():
		c.Plaintext++
	case v.Kind == storedvalue.KMSv2 && err == nil:
		c.ByKeyID[v.KeyID]++
		if opts.CurrentKeyID != "" && v.KeyID == opts.CurrentKeyID && (opts.Provider == "" || v.Provider == opts.Provider) {
			stale = false
		}
	}
	if stale {
		c.Stale++
	} else {
		c.Current++
	}
	if opts.Visit != nil {
		opts.Visit(c.Resource, key, v, stale)
	}
}

// SortedKeys returns m's keys in order, for stable output.
func SortedKeys(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
