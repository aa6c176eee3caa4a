package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// watched is what the waits read of an object. Decoding these fields
// alone, not the whole object into a map as a dynamic client does, kept
// the bench's own CPU for following 2,000 VaultSecret events from about
// 0.3 CPU-seconds to little, on the cores the measured controller uses.
type watched struct {
	Metadata struct {
		Name            string `json:"name"`
		Generation      int64  `json:"generation"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Status struct {
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		// Vault Secrets Operator's sign of a sync.
		SecretMAC      string `json:"secretMAC"`
		LastGeneration int64  `json:"lastGeneration"`
	} `json:"status"`
	// A Secret's data: only its keys are counted.
	Data map[string]json.RawMessage `json:"data"`
}

// conditionTrue tells whether condition kind is True.
func (w *watched) conditionTrue(kind string) bool {
	for _, c := range w.Status.Conditions {
		if c.Type == kind && c.Status == "True" {
			return true
		}
	}
	return false
}

// startCount starts counting the objects of gvr in ns that satisfy ready,
// following a watch, and returns what waits until n do. Started before
// the objects are created, its first LIST is of an empty namespace and
// every object then comes as a watch event. Polling with LISTs every
// 200 ms, as the bench did first, made the API server encode about 1.5 MB
// five times a second while the measured controller competed for the same
// two cores; a watch costs only the changes. The watch asks for no gzip,
// which the API server would otherwise spend CPU on for every event.
func startCount(env *harness.Main, cfg *rest.Config, gvr schema.GroupVersionResource, ns string, n int, ready func(*watched) bool, deadline time.Time) (wait func()) {
	c := rest.CopyConfig(cfg)
	c.DisableCompression = true
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		env.Fatalf("watch client: %v", err)
	}
	base := strings.TrimSuffix(cfg.Host, "/") + "/" + path.Join("apis", gvr.Group, gvr.Version, "namespaces", ns, gvr.Resource)
	if gvr.Group == "" {
		base = strings.TrimSuffix(cfg.Host, "/") + "/" + path.Join("api", gvr.Version, "namespaces", ns, gvr.Resource)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	get := func(query url.Values) *http.Response {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"?"+query.Encode(), nil)
		if err != nil {
			env.Fatalf("%v", err)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			env.Fatalf("%s: %v", gvr.Resource, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			env.Fatalf("%s %s: %s", gvr.Resource, query.Encode(), resp.Status)
		}
		return resp
	}
	state := map[string]bool{}
	count := 0
	set := func(o *watched, deleted bool) {
		was := state[o.Metadata.Name]
		now := !deleted && ready(o)
		state[o.Metadata.Name] = now
		switch {
		case now && !was:
			count++
		case was && !now:
			count--
		}
	}
	// list, then watch from the list's resourceVersion (again after a
	// watch ends: a timeout, a compaction).
	listWatch := func() *http.Response {
		resp := get(url.Values{})
		var list struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
			Items []watched `json:"items"`
		}
		err := json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil {
			env.Fatalf("list %s: %v", gvr.Resource, err)
		}
		for i := range list.Items {
			set(&list.Items[i], false)
		}
		return get(url.Values{"watch": {"true"}, "resourceVersion": {list.Metadata.ResourceVersion}, "allowWatchBookmarks": {"true"}})
	}
	stream := listWatch()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		defer func() { stream.Body.Close() }()
		for count < n {
			dec := json.NewDecoder(stream.Body)
			for count < n {
				var ev struct {
					Type   string  `json:"type"`
					Object watched `json:"object"`
				}
				if err := dec.Decode(&ev); err != nil {
					break
				}
				switch ev.Type {
				case "ADDED", "MODIFIED":
					set(&ev.Object, false)
				case "DELETED":
					set(&ev.Object, true)
				}
				if ev.Type == "ERROR" {
					// Gone (a compaction): list again.
					break
				}
			}
			if count >= n {
				return
			}
			stream.Body.Close()
			if ctx.Err() != nil {
				env.Fatalf("only %d of %d %s ready by the deadline", count, n, gvr.Resource)
			}
			stream = listWatch()
		}
	}()
	return func() { <-done }
}
