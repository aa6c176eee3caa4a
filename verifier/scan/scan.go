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

// Resource names what to scan: "secrets", "configmaps", "deployments.apps",
// or a custom resource as "<plural>.<group>" ("widgets.example.com").
type Resource string

// ParseResources splits a --resources value.
func ParseResources(s string) ([]Resource, error) {
	var out []Resource
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if strings.ContainsAny(part, "/ *") {
			return nil, fmt.Errorf("--resources: %q is not a resource name (use secrets, configmaps or <plural>.<group>; no wildcards: leave --resources out to scan every resource)", part)
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
	CurrentKeyID string `json:"currentKeyID"`
	Prefix       string `json:"prefix"`
	// WholePrefix is true when every key under Prefix was scanned.
	WholePrefix bool      `json:"wholePrefix"`
	Revision    int64     `json:"revision"`
	ScannedAt   time.Time `json:"scannedAt"`
	Resources   []Counts  `json:"resources"`
	// NotScanned names configured resources the scan could not cover
	// (wildcard entries of the EncryptionConfiguration).
	NotScanned []string `json:"notScanned,omitempty"`
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

// Total sums the objects of every resource.
func (r Report) Total() int {
	n := 0
	for _, c := range r.Resources {
		n += c.Total
	}
	return n
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
	Prefix string // default /registry
	// Targets are the resources to scan. Empty scans the whole prefix and
	// names each key's resource from its path (ResourceOf).
	Targets []Target
	// Provider is the KMS v2 provider name that counts as current; empty
	// accepts any provider whose key_id matches.
	Provider string
	// CurrentKeyID is the key_id that counts as current; empty makes
	// every KMS v2 object stale.
	CurrentKeyID string
	// PageBytes bounds the values read in one request (default 1 MiB).
	// The bound is aimed at from the sizes seen so far, so one page may
	// exceed it by the spread of value sizes.
	PageBytes int64
	// KeysPerPage bounds the keys listed in one request (default 10000).
	KeysPerPage int64
	// Parallel is how many value pages are read at once (default 4): etcd
	// serves each on its own goroutine, so several in flight use every
	// core. Memory grows with Parallel × PageBytes.
	Parallel int
	// Progress, when set, is told the number of keys read so far.
	Progress func(resource string, done int)
	// OnRestart, when set, is told that compaction forced a new start:
	// everything Visit saw so far will be seen again.
	OnRestart func(compactedRev int64)
	// Visit, when set, sees each classified key (for reencrypt). It must
	// not keep key or v's byte slices.
	Visit func(resource string, key []byte, v storedvalue.Value, stale bool)
}

// KV is the part of the etcd client a scan uses: reads only.
type KV interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
}

// Run scans at one revision. If etcd compacts that revision mid-scan, the
// scan starts over at the newest revision and says so.
func Run(ctx context.Context, kv KV, opts Options) (Report, error) {
	if opts.Prefix == "" {
		opts.Prefix = "/registry"
	}
	opts.Prefix = strings.TrimSuffix(opts.Prefix, "/")
	if opts.PageBytes <= 0 {
		opts.PageBytes = 1 << 20
	}
	if opts.KeysPerPage <= 0 {
		opts.KeysPerPage = 10000
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if err := CheckCRDs(ctx, kv, opts.Targets); err != nil {
		return Report{}, err
	}
	rep := Report{CurrentKeyID: opts.CurrentKeyID, Prefix: opts.Prefix, WholePrefix: len(opts.Targets) == 0}
	for attempt := 0; ; attempt++ {
		s := &scanner{opts: opts, kv: kv, counts: map[string]*Counts{}}
		err := s.run(ctx)
		if errors.Is(err, rpctypes.ErrCompacted) && attempt < 5 {
			rep.Restarts++
			if opts.OnRestart != nil {
				opts.OnRestart(s.rev)
			}
			continue
		}
		if err != nil {
			return Report{}, err
		}
		rep.Revision, rep.ScannedAt = s.rev, time.Now().UTC()
		for _, name := range s.order {
			rep.Resources = append(rep.Resources, *s.counts[name])
		}
		if rep.WholePrefix {
			sort.Slice(rep.Resources, func(i, j int) bool { return rep.Resources[i].Resource < rep.Resources[j].Resource })
		}
		return rep, nil
	}
}

type scanner struct {
	opts   Options
	kv     KV
	rev    int64
	counts map[string]*Counts
	order  []string
	// avg is the mean value size of the last page, to size value pages.
	avg     int64
	last    *Counts
	lastDir string
}

func (s *scanner) resource(name string) *Counts {
	c, ok := s.counts[name]
	if !ok {
		c = &Counts{Resource: name, ByProvider: map[string]int{}, ByKeyID: map[string]int{}}
		s.counts[name] = c
		s.order = append(s.order, name)
	}
	return c
}

func (s *scanner) run(ctx context.Context) error {
	if len(s.opts.Targets) == 0 {
		return s.scanRange(ctx, "", s.opts.Prefix+"/")
	}
	for _, t := range s.opts.Targets {
		s.resource(t.Resource)
		if err := s.scanRange(ctx, t.Resource, t.KeyPrefix); err != nil {
			return err
		}
	}
	return nil
}

// scanRange lists keys from etcd's in-memory index (keys only: no value is
// read from disk), then reads the values of each run of listed keys with a
// range that ends at the run's last key. etcd counts every key from a
// range's start to its end on each request, so a plain limit-paged read
// costs the server O(n²/page); bounded ranges keep it O(n). Value reads are
// pipelined (Parallel at once) so etcd prepares the next pages while this
// process decodes the current one.
func (s *scanner) scanRange(ctx context.Context, resource, prefix string) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		resp, err := s.get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(s.opts.KeysPerPage))
		if err != nil {
			return fmt.Errorf("list keys under %s at revision %d: %w", prefix, s.rev, err)
		}
		keys := resp.Kvs
		i := 0
		if s.avg == 0 && len(keys) > 0 {
			// Learn the value size with one small read before sizing
			// pages by bytes.
			n := min(16, len(keys))
			if err := s.readValues(ctx, resource, []span{{string(keys[0].Key), string(keys[n-1].Key) + "\x00"}}); err != nil {
				return err
			}
			i = n
		}
		var spans []span
		for i < len(keys) {
			n := s.valuesPerPage(len(keys) - i)
			spans = append(spans, span{string(keys[i].Key), string(keys[i+n-1].Key) + "\x00"})
			i += n
		}
		if err := s.readValues(ctx, resource, spans); err != nil {
			return err
		}
		if !resp.More || len(keys) == 0 {
			return nil
		}
		from = string(keys[len(keys)-1].Key) + "\x00"
	}
}

// span is a key range [lo, hi) whose values one request reads.
type span struct{ lo, hi string }

// readValues reads each span's values, Parallel at a time, and classifies
// them in key order.
func (s *scanner) readValues(ctx context.Context, resource string, spans []span) error {
	type result struct {
		resp *clientv3.GetResponse
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	depth := s.opts.Parallel
	futures := make([]chan result, len(spans))
	start := func(k int) {
		ch := make(chan result, 1)
		futures[k] = ch
		sp := spans[k]
		go func() {
			r, err := s.get(ctx, sp.lo, clientv3.WithRange(sp.hi))
			ch <- result{r, err}
		}()
	}
	for k := 0; k < min(depth, len(spans)); k++ {
		start(k)
	}
	for k, sp := range spans {
		r := <-futures[k]
		if k+depth < len(spans) {
			start(k + depth)
		}
		if r.err != nil {
			return fmt.Errorf("read values %s..%s at revision %d: %w", sp.lo, sp.hi[:len(sp.hi)-1], s.rev, r.err)
		}
		var bytes int64
		for _, item := range r.resp.Kvs {
			bytes += int64(len(item.Value))
			s.classify(resource, item.Key, item.Value)
		}
		if len(r.resp.Kvs) > 0 {
			s.avg = max(1, bytes/int64(len(r.resp.Kvs)))
		}
		if s.opts.Progress != nil && s.last != nil {
			s.opts.Progress(s.last.Resource, s.last.Total)
		}
	}
	return nil
}

// valuesPerPage picks how many keys the next value read covers so that it
// stays near PageBytes; it starts small until value sizes are known.
func (s *scanner) valuesPerPage(left int) int {
	n := 16
	if s.avg > 0 {
		n = int(max(1, s.opts.PageBytes/s.avg))
	}
	return max(1, min(n, left))
}

// get reads at the scan's revision: the first read fixes it, later ones are
// served by the member at that revision without a quorum round trip. Value
// reads run concurrently only after the revision is fixed.
func (s *scanner) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if s.rev != 0 {
		opts = append(opts, clientv3.WithRev(s.rev), clientv3.WithSerializable())
	}
	resp, err := s.kv.Get(ctx, key, opts...)
	if errors.Is(err, rpctypes.ErrFutureRev) {
		// This member is behind the one that fixed the revision: ask
		// for a linearizable read, which waits for it to catch up.
		resp, err = s.kv.Get(ctx, key, opts[:len(opts)-1]...)
	}
	if err != nil {
		return nil, err
	}
	if s.rev == 0 {
		s.rev = resp.Header.Revision
	}
	return resp, nil
}

func (s *scanner) classify(resource string, key, value []byte) {
	c := s.last
	if resource != "" {
		if c == nil || c.Resource != resource {
			c = s.resource(resource)
		}
	} else {
		// Whole prefix: keys come sorted, so the resource changes rarely;
		// compare the directory before computing the name.
		dir := keyDir(key, len(s.opts.Prefix)+1)
		// string(dir) in a comparison does not allocate.
		if c == nil || string(dir) != s.lastDir {
			c = s.resource(ResourceOf(s.opts.Prefix, string(key)))
			s.lastDir = string(dir)
		}
	}
	s.last = c
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
		if s.opts.CurrentKeyID != "" && v.KeyID == s.opts.CurrentKeyID && (s.opts.Provider == "" || v.Provider == s.opts.Provider) {
			stale = false
		}
	}
	if stale {
		c.Stale++
	} else {
		c.Current++
	}
	if s.opts.Visit != nil {
		s.opts.Visit(c.Resource, key, v, stale)
	}
}

// keyDir returns the first two path segments of key after skip bytes,
// enough to tell resources apart ("services/specs", "example.com/widgets").
func keyDir(key []byte, skip int) []byte {
	if skip > len(key) {
		return key
	}
	rest := key[skip:]
	slashes := 0
	for i, b := range rest {
		if b == '/' {
			slashes++
			if slashes == 2 {
				return rest[:i]
			}
		}
	}
	return rest
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
