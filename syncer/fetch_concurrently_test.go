package syncer

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Every marked source is fetched at once: each fetch waits until all of
// them have started, which a one-after-the-other loop never lets happen
// (the test would fail on the barrier's deadline, not on a timing).
func TestFetchConcurrentlyStartsAllAtOnce(t *testing.T) {
	read := []bool{true, false, true, true}
	var started sync.WaitGroup
	started.Add(3)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	got, err := fetchConcurrently(read, func(i int) (fetched, error) {
		started.Done()
		select {
		case <-all:
		case <-deadline(t):
			return fetched{}, fmt.Errorf("source %d: the other fetches never started while this one waited", i)
		}
		return fetched{leaseID: fmt.Sprint("lease-", i)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].leaseID != "lease-0" || got[2].leaseID != "lease-2" || got[3].leaseID != "lease-3" {
		t.Fatalf("got %+v", got)
	}
	if _, ok := got[1]; ok {
		t.Fatal("source 1 was not marked to read, yet fetched")
	}
}

func TestFetchConcurrentlyFailures(t *testing.T) {
	cases := []struct {
		name    string
		read    []bool
		fail    map[int]bool
		wantErr string
		wantGot []int
	}{
		{"none marked", []bool{false, false}, nil, "", nil},
		{"one marked, it fails", []bool{false, true}, map[int]bool{1: true}, "source 1 failed", nil},
		{"the lowest failing source is reported, the others' results kept", []bool{true, true, true}, map[int]bool{2: true, 1: true}, "source 1 failed", []int{0}},
		{"all succeed", []bool{true, true}, nil, "", []int{0, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := fetchConcurrently(c.read, func(i int) (fetched, error) {
				if c.fail[i] {
					return fetched{}, fmt.Errorf("source %d failed", i)
				}
				return fetched{leaseID: fmt.Sprint(i)}, nil
			})
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || err.Error() != c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			if len(got) != len(c.wantGot) {
				t.Fatalf("got %+v, want sources %v", got, c.wantGot)
			}
			for _, i := range c.wantGot {
				if got[i].leaseID != fmt.Sprint(i) {
					t.Errorf("source %d: %+v", i, got[i])
				}
			}
		})
	}
}

// deadline bounds the barrier's wait: a fetch loop that runs one source at
// a time never releases it, and the test fails instead of hanging.
func deadline(t *testing.T) <-chan time.Time {
	t.Helper()
	return time.After(10 * time.Second)
}
