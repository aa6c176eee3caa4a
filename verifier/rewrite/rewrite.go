// Package rewrite re-encrypts stored objects through kube-apiserver: an
// update that changes nothing makes the API server write the object again
// under its current key, because it notices the stored value is stale.
// Object data is never changed.
package rewrite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

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
	// MaxConflicts bounds retries of one object that keeps changing.
	MaxConflicts int
}

// Run rewrites each object, honouring the rate limit and ctx.
func (r *Rewriter) Run(ctx context.Context, objs []Object) (Result, error) {
	if r.MaxConflicts <= 0 {
		r.MaxConflicts = 5
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
		_, err = c.Update(ctx, obj, metav1.UpdateOptions{FieldManager: "kubectl-vaultkms"})
		if err == nil || !apierrors.IsConflict(err) || attempt >= r.MaxConflicts {
			return err
		}
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
