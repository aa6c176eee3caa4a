package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// errQueueFull is returned when more calls wait than the queue holds:
// answering at once lets the caller back off instead of timing out.
var errQueueFull = errors.New("too many calls are waiting for vault; retry later")

// errResultCount is a batch answered with a result count that differs
// from its calls.
var errResultCount = errors.New("a batch got a wrong number of results")

// batcher coalesces concurrent calls into batches. A call that finds a free
// slot goes out at once, together with whatever is already queued, so a
// quiet system pays no added latency; calls that arrive while every slot is
// busy queue up and leave as one batch when a slot frees. Under load this
// turns N round trips into one without any timer.
//
// A batch is sent from the goroutine of one of its callers (its leader),
// never from a goroutine of its own: a new goroutine per batch would grow
// a fresh stack through the HTTP and TLS code every time, which cost about
// a tenth of the plugin's CPU in a profile.
type batcher[In, Out any] struct {
	do          func(ctx context.Context, in []In) ([]Out, []error, error)
	maxBatch    int
	maxInFlight int
	// observe, when set, is told each batch's size.
	observe func(size int)
	// maxQueue caps waiting calls; 0 means no cap.
	maxQueue int

	mu       sync.Mutex
	inFlight int
	queue    []*call[In, Out]
}

// Call states: a waiting call may be made a batch's leader, or leave when
// its context ends; whichever happens first wins.
const (
	callWaiting int32 = iota
	callLeading
	callLeft
)

type call[In, Out any] struct {
	ctx  context.Context
	in   In
	done chan struct{}
	out  Out
	err  error
	// lead receives the batch this call is to send (its slot included).
	lead  chan []*call[In, Out]
	state atomic.Int32
}

func newBatcher[In, Out any](maxBatch, maxInFlight int, do func(context.Context, []In) ([]Out, []error, error)) *batcher[In, Out] {
	return &batcher[In, Out]{do: do, maxBatch: max(1, maxBatch), maxInFlight: max(1, maxInFlight)}
}

// Submit runs in as part of some batch and returns its result, or ctx's
// error if ctx ends first.
func (b *batcher[In, Out]) Submit(ctx context.Context, in In) (Out, error) {
	c := &call[In, Out]{ctx: ctx, in: in, done: make(chan struct{}), lead: make(chan []*call[In, Out], 1)}
	b.mu.Lock()
	if b.maxQueue > 0 && len(b.queue) >= b.maxQueue && b.inFlight >= b.maxInFlight {
		b.mu.Unlock()
		var zero Out
		return zero, errQueueFull
	}
	b.queue = append(b.queue, c)
	var batch []*call[In, Out]
	if b.inFlight < b.maxInFlight {
		b.inFlight++
		if batch = b.takeLocked(); len(batch) == 0 {
			b.inFlight--
		}
	}
	b.mu.Unlock()
	if len(batch) > 0 {
		// A call that takes a free slot is in the batch it takes: the
		// queue holds calls only while every slot is busy.
		b.run(batch)
		<-c.done
		return c.out, c.err
	}
	select {
	case <-c.done:
		return c.out, c.err
	case next := <-c.lead:
		// Handed a slot: the batch holds this call too.
		b.run(next)
		<-c.done
		return c.out, c.err
	case <-ctx.Done():
		if !c.state.CompareAndSwap(callWaiting, callLeft) {
			// Made leader as the context ended: the batch is on its way
			// to c.lead, and the others in it still want it sent.
			next := <-c.lead
			go b.run(next)
		}
		var zero Out
		return zero, ctx.Err()
	}
}

// takeLocked removes up to maxBatch live calls from the queue.
func (b *batcher[In, Out]) takeLocked() []*call[In, Out] {
	var batch []*call[In, Out]
	i := 0
	for ; i < len(b.queue) && len(batch) < b.maxBatch; i++ {
		c := b.queue[i]
		if c.ctx.Err() != nil {
			c.err = c.ctx.Err()
			close(c.done)
			continue
		}
		batch = append(batch, c)
	}
	n := copy(b.queue, b.queue[i:])
	clear(b.queue[n:])
	b.queue = b.queue[:n]
	return batch
}

// run sends batch, then passes the slot on with the next batch to a caller
// in it, or frees the slot when nothing waits.
func (b *batcher[In, Out]) run(batch []*call[In, Out]) {
	b.send(batch)
	b.mu.Lock()
	next := b.takeLocked()
	if len(next) == 0 {
		b.inFlight--
	}
	b.mu.Unlock()
	if len(next) == 0 {
		return
	}
	for _, c := range next {
		if c.state.CompareAndSwap(callWaiting, callLeading) {
			c.lead <- next
			return
		}
	}
	// Every caller in it has left: the batch still goes out, so the slot
	// is freed the same way.
	go b.run(next)
}

func (b *batcher[In, Out]) send(batch []*call[In, Out]) {
	if b.observe != nil {
		b.observe(len(batch))
	}
	ins := make([]In, len(batch))
	for i, c := range batch {
		ins[i] = c.in
	}
	ctx, cancel := batchContext(batch)
	outs, errs, err := b.do(ctx, ins)
	cancel()
	if err == nil && (len(outs) != len(batch) || len(errs) != len(batch)) {
		// Never a zero value passed off as an answer.
		err = fmt.Errorf("%w: %d results and %d errors for %d calls", errResultCount, len(outs), len(errs), len(batch))
	}
	for i, c := range batch {
		switch {
		case err != nil:
			c.err = err
		case errs[i] != nil:
			c.err = errs[i]
		default:
			c.out = outs[i]
		}
		close(c.done)
	}
}

// batchContext lives as long as the longest-waiting caller still wants an
// answer, so one caller's short deadline never fails the others.
func batchContext[In, Out any](batch []*call[In, Out]) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.Background())
	var waiting atomic.Int64
	waiting.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, c := range batch {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if waiting.Add(-1) == 0 {
				// The cause is the last caller's: a cancellation or a
				// deadline, which health tells apart (see callerLeft).
				cancel(c.ctx.Err())
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(context.Canceled)
	}
}
