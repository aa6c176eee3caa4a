package ha

import (
	"errors"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	boom := errors.New("boom")
	cases := []struct {
		name                        string
		writes                      []write
		attempted, succeeded, fails int
		window                      time.Duration
		byServer                    map[int][2]int
	}{
		{name: "none", byServer: map[int][2]int{}},
		{name: "all ok", writes: []write{{server: 0, start: at(0), end: at(0.1)}, {server: 1, start: at(1), end: at(1.1)}},
			attempted: 2, succeeded: 2, byServer: map[int][2]int{0: {1, 0}, 1: {1, 0}}},
		{name: "window from first failed start to last failed end, whatever their order",
			writes: []write{
				{server: 0, start: at(5), end: at(5.5), err: boom},
				{server: 1, start: at(2), end: at(2.2), err: boom},
				{server: 0, start: at(3), end: at(3.1)},
				{server: 1, start: at(6), end: at(9), err: boom},
			},
			attempted: 4, succeeded: 1, fails: 3, window: 7 * time.Second, byServer: map[int][2]int{0: {1, 1}, 1: {0, 2}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := summarize(tc.writes, 2*time.Second)
			if s.attempted != tc.attempted || s.succeeded != tc.succeeded || s.failed != tc.fails {
				t.Errorf("counts %d/%d/%d, want %d/%d/%d", s.attempted, s.succeeded, s.failed, tc.attempted, tc.succeeded, tc.fails)
			}
			if got := s.failureWindow(); got != tc.window {
				t.Errorf("window %s, want %s", got, tc.window)
			}
			if s.rate != float64(tc.attempted)/2 {
				t.Errorf("rate %v, want %v", s.rate, float64(tc.attempted)/2)
			}
			for k, v := range tc.byServer {
				if s.byServer[k] != v {
					t.Errorf("server %d: %v, want %v", k, s.byServer[k], v)
				}
			}
			if len(s.byServer) != len(tc.byServer) {
				t.Errorf("servers %v, want %v", s.byServer, tc.byServer)
			}
		})
	}
}

func TestFirstAfter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ss := []sample{{at: t0, ok: true}, {at: t0.Add(time.Second), ok: false}, {at: t0.Add(2 * time.Second), ok: false}, {at: t0.Add(3 * time.Second), ok: true}}
	cases := []struct {
		since time.Time
		ok    bool
		want  time.Time
		found bool
	}{
		{t0.Add(-time.Second), true, t0, true},
		{t0, true, t0.Add(3 * time.Second), true}, // strictly after since
		{t0, false, t0.Add(time.Second), true},
		{t0.Add(3 * time.Second), false, time.Time{}, false},
	}
	for _, tc := range cases {
		got, found := firstAfter(ss, tc.since, tc.ok)
		if found != tc.found || !got.Equal(tc.want) {
			t.Errorf("firstAfter(%s, %v) = %s %v, want %s %v", tc.since.Sub(t0), tc.ok, got, found, tc.want, tc.found)
		}
	}
	if at, ok := recoveredAt(ss, t0.Add(-time.Second)); !ok || !at.Equal(t0.Add(3*time.Second)) {
		t.Errorf("recoveredAt = %s %v, want 3s", at.Sub(t0), ok)
	}
	if at, ok := recoveredAt(ss, t0.Add(2*time.Second)); !ok || !at.Equal(t0.Add(2*time.Second)) {
		t.Errorf("recoveredAt with no failure after since = %s %v, want since", at.Sub(t0), ok)
	}
	if _, ok := recoveredAt(ss[:3], t0); ok {
		t.Error("recoveredAt says recovered while the last sample fails")
	}
	if !anyFalse(ss, t0, t0.Add(time.Second)) || anyFalse(ss, t0.Add(3*time.Second), t0.Add(4*time.Second)) {
		t.Error("anyFalse wrong")
	}
}
