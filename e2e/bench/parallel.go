package main

import (
	"sync"

	"k8s.io/client-go/rest"
)

// writers is how many clients create the bench's objects (or read Vault)
// at once.
const writers = 16

// inParallel calls f(i) for every i in [from, to) from writers
// goroutines and returns the first error. The caller reports it: failing
// from one of these goroutines would tear the environment down while the
// others still use it.
func inParallel(from, to int, f func(i int) error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < to; i += writers {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// unthrottled is cfg without a client-side rate limit. envtest's config
// allows 1,000 requests a second (burst 2,000): a bench whose writers go
// faster than that would time the client's limiter, not the API server.
func unthrottled(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst, c.RateLimiter = -1, 0, nil
	return c
}
