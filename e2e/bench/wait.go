package main

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// waitCount waits until n objects of gvr in ns satisfy ready, following a
// watch. Polling with LISTs every 200 ms, as the bench did first, made the
// API server encode about 1.5 MB five times a second while the measured
// controller competed for the same two cores; a watch costs only the
// changes.
func waitCount(env *harness.Main, cfg *rest.Config, gvr schema.GroupVersionResource, ns string, n int, ready func(*unstructured.Unstructured) bool, deadline time.Time) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		env.Fatalf("dynamic client: %v", err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	res := dyn.Resource(gvr).Namespace(ns)
	for {
		list, err := res.List(ctx, metav1.ListOptions{})
		if err != nil {
			env.Fatalf("list %s: %v", gvr.Resource, err)
		}
		state := map[string]bool{}
		count := 0
		set := func(u *unstructured.Unstructured, deleted bool) {
			was := state[u.GetName()]
			now := !deleted && ready(u)
			state[u.GetName()] = now
			switch {
			case now && !was:
				count++
			case was && !now:
				count--
			}
		}
		for i := range list.Items {
			set(&list.Items[i], false)
		}
		if count >= n {
			return
		}
		w, err := res.Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion(), AllowWatchBookmarks: true})
		if err != nil {
			env.Fatalf("watch %s: %v", gvr.Resource, err)
		}
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				set(u, false)
			case watch.Deleted:
				set(u, true)
			}
			if count >= n {
				w.Stop()
				return
			}
		}
		// The watch ended (a timeout, or a compaction): list again.
		if ctx.Err() != nil {
			env.Fatalf("only %d of %d %s ready by the deadline", count, n, gvr.Resource)
		}
	}
}
