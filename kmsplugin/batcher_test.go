package kmsplugin

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gate is a batch function that blocks until released, recording sizes.
type gate struct {
	mu      sync.Mutex
	sizes   []int
	release chan struct{}
	calls   atomic.Int32
}

func (g *gate) do(_ context.Context, in []int) ([]int, []error, error) {
	g.calls.Add(1)
	g.mu.Lock()
	g.sizes = append(g.sizes, len(in))
	g.mu.Unlock()
	<-g.release
	out := make([]int, len(in))
	errs := make([]error, len(in))
	for i, v := range in {
		if v < 0 {
			errs[i] = errors.New("negative")
			continue
		}
		out[i] = v * 2
	}
	return out, errs, nil
}

func TestBatcherLoneCallGoesOutAtOnce(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	close(g.release)
	b := newBatcher(8, 1, g.do)
	got, err := b.Submit(context.Background(), 21)
	if err != nil || got != 42 {
		t.Fatalf("Submit = %d, %v", got, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.sizes) != 1 || g.sizes[0] != 1 {
		t.Fatalf("batch sizes %v, want [1]", g.sizes)
	}
}

func TestBatcherCoalescesWhileBusy(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	b := newBatcher(8, 1, g.do)
	results := make(chan int, 10)
	go func() { v, _ := b.Submit(context.Background(), 1); results <- v }()
	waitFor(t, func() bool { return g.calls.Load() == 1 })
	// With the only slot busy, the next nine queue: they must leave as
	// one batch of eight and one of one.
	for i := 2; i <= 10; i++ {
		go func() { v, _ := b.Submit(context.Background(), i); results <- v }()
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.queue) == 9 })
	close(g.release)
	sum := 0
	for range 10 {
		sum += <-results
	}
	if sum != 2*55 {
		t.Fatalf("sum of results %d, want 110", sum)
	}
	g.mu.Lock()
	sizes := g.sizes
	g.mu.Unlock()
	if len(sizes) != 3 || sizes[0] != 1 || sizes[1] != 8 || sizes[2] != 1 {
		t.Fatalf("batch sizes %v, want [1 8 1]", sizes)
	}
	// The slot is freed once the last batch's results are delivered.
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.inFlight == 0 })
}

func TestBatcherPerItemErrors(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	close(g.release)
	b := newBatcher(8, 2, g.do)
	if _, err := b.Submit(context.Background(), -1); err == nil {
		t.Fatal("item error not returned")
	}
	if v, err := b.Submit(context.Background(), 2); err != nil || v != 4 {
		t.Fatalf("Submit after an item error = %d, %v", v, err)
	}
}

func TestBatcherWholeBatchError(t *testing.T) {
	boom := errors.New("vault down")
	b := newBatcher(8, 1, func(context.Context, []int) ([]int, []error, error) { return nil, nil, boom })
	if _, err := b.Submit(context.Background(), 1); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
}

func TestBatcherCallerDeadline(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	b := newBatcher(8, 1, g.do)
	go b.Submit(context.Background(), 1) // holds the only slot
	waitFor(t, func() bool { return g.calls.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Submit(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	close(g.release)
	// The expired call must be dropped, not sent.
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.inFlight == 0 })
	if g.calls.Load() != 1 {
		t.Fatalf("%d batches sent, want 1: an expired call was sent", g.calls.Load())
	}
}

func TestBatchContextOutlivesShortDeadlines(t *testing.T) {
	short, cancelShort := context.WithCancel(context.Background())
	long, cancelLong := context.WithCancel(context.Background())
	defer cancelLong()
	batch := []*call[int, int]{{ctx: short}, {ctx: long}}
	ctx, cancel := batchContext(batch)
	defer cancel()
	cancelShort()
	time.Sleep(10 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("batch context ended while a caller still waits")
	}
	cancelLong()
	waitFor(t, func() bool { return ctx.Err() != nil })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkBatcherParallel(b *testing.B) {
	bt := newBatcher(128, 4, func(_ context.Context, in []int) ([]int, []error, error) {
		return in, nil, nil
	})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bt.Submit(context.Background(), 1)
		}
	})
}

// Callers whose contexts end at random moments (in the queue, while
// leading, while handed a batch) must never strand the others: every
// caller that stays gets its own result, and every slot is freed.
func TestBatcherCallersLeavingAtRandom(t *testing.T) {
	var sent atomic.Int64
	b := newBatcher(4, 2, func(_ context.Context, in []int) ([]int, []error, error) {
		sent.Add(int64(len(in)))
		time.Sleep(50 * time.Microsecond)
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = v * 2
		}
		return out, make([]error, len(in)), nil
	})
	var wg sync.WaitGroup
	var wrong, stayedWithoutAnswer atomic.Int32
	for i := range 2000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			leaves := i%3 == 0
			if leaves {
				go func() {
					time.Sleep(time.Duration(i%7) * 20 * time.Microsecond)
					cancel()
				}()
			}
			v, err := b.Submit(ctx, i)
			switch {
			case err == nil && v != 2*i:
				wrong.Add(1)
			case err != nil && !leaves:
				stayedWithoutAnswer.Add(1)
			}
		}()
	}
	wg.Wait()
	if wrong.Load() != 0 || stayedWithoutAnswer.Load() != 0 {
		t.Fatalf("%d wrong results, %d callers that stayed got no answer", wrong.Load(), stayedWithoutAnswer.Load())
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.inFlight == 0 && len(b.queue) == 0 })
	if sent.Load() < 2000*2/3 {
		t.Fatalf("%d items sent, want at least the %d that stayed", sent.Load(), 2000*2/3)
	}
}
