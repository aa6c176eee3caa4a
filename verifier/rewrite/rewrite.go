// Package rewrite re-encrypts stored objects through kube-apiserver: an
// update that changes nothing makes the API server write the object again
// under its current key, because it notices the stored value is stale.
// Object data is never changed.
package rewrite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/vaultkms/vaultkms/verifier/scan"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

// Object names one stored object, parsed from its etcd key.
type Object struct {
	Namespace, Name string
}

// ParseKey turns an etcd key under resourcePrefix ("/registry/secrets/")
// into the object it stores. Namespaced keys are <ns>/<name>, cluster-scoped
// ones <name>.
func ParseKey(resourcePrefix, key string) (Object, error) {
	rest, ok := strings.CutPrefix(key, resourcePrefix)
	if !ok || rest == "" {
		return Object{}, fmt.Errorf("etcd key %q is not under %q", key, resourcePrefix)
	}
	ns, name, namespaced := strings.Cut(rest, "/")
	if !namespaced {
		return Object{Name: ns}, nil
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return Object{}, fmt.Errorf("etcd key %q is not <namespace>/<name> under %q", key, resourcePrefix)
	}
	return Object{Namespace: ns, Name: name}, nil
}

// Result sums a run.
type Result struct {
	Rewritten int `json:"rewritten"`
	// Gone counts objects deleted between the scan and their rewrite.
	Gone   int      `json:"gone"`
	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"`
}

// Rewriter rewrites objects of one resource.
type Rewriter struct {
	Client   dynamic.Interface
	Resource schema.GroupVersionResource
	Limiter  *rate.Limiter
	// Workers is how many objects are rewritten at once (default 4).
	Workers int
	// Progress, when set, is told after each object.
	Progress func(done int)
	// MaxConflicts bounds retries of one object that keeps changing
	// (default 8).
	MaxConflicts int
	// Backoff is the wait before retry n (1-based) after a conflict;
	// default ConflictBackoff. A writer that keeps an object busy gets
	// time to finish instead of losing to immediate re-reads.
	Backoff func(n int) time.Duration
	// Sleep waits d or until ctx ends (default: a timer); tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// FieldManager names the writer (default kubectl-vaultkms).
	FieldManager string
}

// Run rewrites each object, honouring the rate limit and ctx.
func (r *Rewriter) Run(ctx context.Context, objs []Object) (Result, error) {
	if r.MaxConflicts <= 0 {
		r.MaxConflicts = 8
	}
	if r.Backoff == nil {
		r.Backoff = ConflictBackoff
	}
	if r.Sleep == nil {
		r.Sleep = sleepCtx
	}
	workers := max(1, r.Workers)
	if r.Workers == 0 {
		workers = 4
	}
	var (
		mu    sync.Mutex
		res   Result
		done  atomic.Int64
		fatal error
		wg    sync.WaitGroup
	)
	next := make(chan Object)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range next {
				err := r.one(ctx, o)
				mu.Lock()
				switch {
				case err == nil:
					res.Rewritten++
				case apierrors.IsNotFound(err):
					res.Gone++
				case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
					if fatal == nil {
						fatal = err
					}
				default:
					res.Failed++
					if len(res.Errors) < 20 {
						res.Errors = append(res.Errors, fmt.Sprintf("%s/%s: %v", o.Namespace, o.Name, err))
					}
				}
				mu.Unlock()
				if r.Progress != nil {
					r.Progress(int(done.Add(1)))
				}
			}
		}()
	}
	for _, o := range objs {
		if r.Limiter != nil {
			if err := r.Limiter.Wait(ctx); err != nil {
				mu.Lock()
				if fatal == nil {
					fatal = err
				}
				mu.Unlock()
				break
			}
		} else if ctx.Err() != nil {
			break
		}
		next <- o
	}
	close(next)
	wg.Wait()
	if fatal == nil && ctx.Err() != nil {
		fatal = ctx.Err()
	}
	return res, fatal
}

// one reads the object and writes it back unchanged. The update carries
// the resourceVersion just read, so a concurrent change makes it fail with
// a conflict instead of being overwritten; then it reads again.
func (r *Rewriter) one(ctx context.Context, o Object) error {
	var c dynamic.ResourceInterface = r.Client.Resource(r.Resource)
	if o.Namespace != "" {
		c = r.Client.Resource(r.Resource).Namespace(o.Namespace)
	}
	for attempt := 0; ; attempt++ {
		obj, err := c.Get(ctx, o.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		fm := r.FieldManager
		if fm == "" {
			fm = "kubectl-vaultkms"
		}
		_, err = c.Update(ctx, obj, metav1.UpdateOptions{FieldManager: fm})
		if err == nil || !apierrors.IsConflict(err) || attempt >= r.MaxConflicts {
			return err
		}
		if err := r.Sleep(ctx, r.Backoff(attempt+1)); err != nil {
			return err
		}
	}
}

// ConflictBackoff doubles from 100 ms up to 5 s, each wait with up to a
// quarter added at random so workers that conflicted together do not
// retry together.
func ConflictBackoff(n int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < n && d < 5*time.Second; i++ {
		d *= 2
	}
	d = min(d, 5*time.Second)
	return d + time.Duration(rand.Int64N(int64(d/4)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StaleSet collects, from a scan's Visit calls, the stale objects of each
// resource, once each. Reset empties it when the scan restarts after a
// compaction, so a restarted scan never queues an object twice.
type StaleSet struct {
	prefix string
	byRes  map[string][]Object
	seen   map[string]bool
	err    error
}

// NewStaleSet collects stale objects stored under the etcd prefix.
func NewStaleSet(prefix string) *StaleSet {
	s := &StaleSet{prefix: prefix}
	s.Reset()
	return s
}

// Reset forgets everything collected.
func (s *StaleSet) Reset() {
	s.byRes, s.seen, s.err = map[string][]Object{}, map[string]bool{}, nil
}

// Visit has the signature of scan.Options.Visit.
func (s *StaleSet) Visit(resource string, key []byte, _ storedvalue.Value, stale bool) {
	if !stale || s.seen[string(key)] {
		return
	}
	o, err := ParseKey(scan.Resource(resource).KeyPrefix(s.prefix), string(key))
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.seen[string(key)] = true
	s.byRes[resource] = append(s.byRes[resource], o)
}

// Objects returns the stale objects of resource, in key order.
func (s *StaleSet) Objects(resource string) []Object { return s.byRes[resource] }

// Len counts every collected object.
func (s *StaleSet) Len() int { return len(s.seen) }

// Err is the first key that could not be parsed.
func (s *StaleSet) Err() error { return s.err }

// ResourceResult is what Stale did for one resource.
type ResourceResult struct {
	Resource string `json:"resource"`
	Stale    int    `json:"stale"`
	Result
}

// Config is what Stale needs to rewrite objects through the API server.
type Config struct {
	Client  dynamic.Interface
	Mapper  meta.RESTMapper
	Limiter *rate.Limiter
	Workers int
	// FieldManager names the writer in managedFields (default
	// kubectl-vaultkms).
	FieldManager string
	// Progress, when set, is called before each resource with its number
	// of stale objects and returns the per-object progress callback.
	Progress func(resource string, stale int) func(done int)
}

// Stale rewrites every object collected in stale, resource by resource in
// the order given (the resources of a scan report). It is the shared
// re-encryption step of `kubectl vaultkms reencrypt` and the autopilot. An
// interruption returns what was done so far with the error; objects that
// could not be rewritten are counted in each result's Failed.
func Stale(ctx context.Context, cfg Config, resources []string, stale *StaleSet) ([]ResourceResult, error) {
	var out []ResourceResult
	for _, name := range resources {
		res := scan.Resource(name)
		objs := stale.Objects(name)
		rr := ResourceResult{Resource: string(res), Stale: len(objs)}
		if len(objs) > 0 {
			gvr, err := Resolve(cfg.Mapper, res)
			if err != nil {
				return out, err
			}
			rw := &Rewriter{Client: cfg.Client, Resource: gvr, Limiter: cfg.Limiter, Workers: cfg.Workers, FieldManager: cfg.FieldManager}
			if cfg.Progress != nil {
				rw.Progress = cfg.Progress(string(res), len(objs))
			}
			rr.Result, err = rw.Run(ctx, objs)
			if err != nil {
				out = append(out, rr)
				return out, fmt.Errorf("reencrypt %s interrupted after %d objects (run again to resume): %w", res, rr.Rewritten, err)
			}
		}
		out = append(out, rr)
	}
	return out, nil
}

// Resolve maps "secrets" or "widgets.example.com" to the served version.
func Resolve(m meta.RESTMapper, res scan.Resource) (schema.GroupVersionResource, error) {
	gr := schema.ParseGroupResource(string(res))
	gvr, err := m.ResourceFor(gr.WithVersion(""))
	if err != nil {
		return schema.GroupVersionResource{}, fmt.Errorf("resource %q is not served by the API server: %w", res, err)
	}
	return gvr, nil
}

// Clients builds the dynamic client and REST mapper Stale needs from cfg.
// qps is the pacing of rewrites; each costs a read and a write, so the
// client's own limiter (5 requests/s by default) is raised above it.
func Clients(cfg *rest.Config, qps float64) (dynamic.Interface, meta.RESTMapper, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = float32(max(2*qps+10, 20))
	cfg.Burst = int(cfg.QPS)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	return dyn, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), nil
}
