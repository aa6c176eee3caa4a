package main

import (
	"runtime/debug"
	"testing"
)

func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOGC" {
				return v
			}
			return ""
		}
	}
	setGCPercent(env(""))
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Fatalf("without GOGC: %d, want %d", got, gcPercent)
	}
	// GOGC set: what the runtime runs with (here the 100 just set, as
	// the runtime would have set it from GOGC=100) stays.
	setGCPercent(env("100"))
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC=100: %d", got)
	}
}
