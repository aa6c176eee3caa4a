package ha

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const namespace = "default"

// write is one Secret create through one API server.
type write struct {
	server     int
	name       string
	value      string
	start, end time.Time
	err        error
}

// load creates Secrets at a steady rate, spread over API servers.
type load struct {
	mu      sync.Mutex
	writes  []write
	skipped atomic.Int64
	cancel  context.CancelFunc
	done    chan struct{}
	began   time.Time
}

// maxInFlight bounds the writes waiting on a slow API server; a tick that
// finds them all busy is counted as skipped, not as a failure.
const maxInFlight = 64

// startLoad writes perSecond Secrets a second, round robin over servers,
// until stop. Names start with prefix.
func startLoad(c *cluster, servers []int, perSecond int, prefix string) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{}), began: time.Now()}
	sem := make(chan struct{}, maxInFlight)
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				l.skipped.Add(1)
				continue
			}
			srv := servers[seq%len(servers)]
			name := fmt.Sprintf("%s-%05d", prefix, seq)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				w := createSecret(c, srv, name)
				l.mu.Lock()
				l.writes = append(l.writes, w)
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

// stop ends the load, waits for the writes in flight and returns them all.
func (l *load) stop() []write {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]write(nil), l.writes...)
}

func randomValue() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// createSecret creates one Secret through API server srv.
func createSecret(c *cluster, srv int, name string) write {
	w := write{server: srv, name: name, value: randomValue(), start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, w.err = c.apis[srv].client.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"vaultkms.test": "ha"}},
		Data:       map[string][]byte{"v": []byte(w.value)},
	}, metav1.CreateOptions{})
	w.end = time.Now()
	return w
}

// summary is what a load saw.
type summary struct {
	attempted, succeeded, failed int
	// rate is the attempted writes per second.
	rate float64
	// firstFailure is when the first failed write started, lastFailure
	// when the last one returned; zero without failures.
	firstFailure, lastFailure time.Time
	// byServer counts [succeeded, failed] per API server.
	byServer map[int][2]int
	// firstErr is one failure's error, for the log.
	firstErr string
}

// summarize counts writes; it is pure so its arithmetic is unit tested.
func summarize(ws []write, duration time.Duration) summary {
	s := summary{attempted: len(ws), byServer: map[int][2]int{}}
	if duration > 0 {
		s.rate = float64(len(ws)) / duration.Seconds()
	}
	for _, w := range ws {
		n := s.byServer[w.server]
		if w.err == nil {
			s.succeeded++
			n[0]++
		} else {
			s.failed++
			n[1]++
			if s.firstFailure.IsZero() || w.start.Before(s.firstFailure) {
				s.firstFailure = w.start
				s.firstErr = w.err.Error()
			}
			if w.end.After(s.lastFailure) {
				s.lastFailure = w.end
			}
		}
		s.byServer[w.server] = n
	}
	return s
}

// failureWindow is how long writes kept failing: from the start of the
// first failed write to the return of the last.
func (s summary) failureWindow() time.Duration {
	if s.failed == 0 {
		return 0
	}
	return s.lastFailure.Sub(s.firstFailure)
}

func (s summary) String() string {
	out := fmt.Sprintf("attempted %d (%.1f/s), succeeded %d, failed %d", s.attempted, s.rate, s.succeeded, s.failed)
	if s.failed > 0 {
		out += fmt.Sprintf(" over %s (first error: %s)", s.failureWindow().Round(10*time.Millisecond), s.firstErr)
	}
	var servers []int
	for k := range s.byServer {
		servers = append(servers, k)
	}
	sort.Ints(servers)
	for _, k := range servers {
		out += fmt.Sprintf("; server %d: %d ok, %d failed", k, s.byServer[k][0], s.byServer[k][1])
	}
	return out
}

// readBack reads every successful write through every API server and
// returns how many reads were checked and the problems: missing, wrong
// data or unreadable (an API server that cannot decrypt it).
func readBack(t testing.TB, c *cluster, ws []write) (checked int, problems []string) {
	t.Helper()
	type job struct {
		w   write
		srv int
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				s, err := c.apis[j.srv].client.CoreV1().Secrets(namespace).Get(ctx, j.w.name, metav1.GetOptions{})
				cancel()
				var p string
				switch {
				case err != nil:
					p = fmt.Sprintf("%s via %s: %v", j.w.name, c.apis[j.srv].name, err)
				case string(s.Data["v"]) != j.w.value:
					p = fmt.Sprintf("%s via %s: data differs from what was written", j.w.name, c.apis[j.srv].name)
				}
				mu.Lock()
				checked++
				if p != "" {
					problems = append(problems, p)
				}
				mu.Unlock()
			}
		}()
	}
	for _, w := range ws {
		if w.err != nil {
			continue
		}
		for srv := range c.apis {
			jobs <- job{w, srv}
		}
	}
	close(jobs)
	wg.Wait()
	return checked, problems
}

// assertNothingLost reads back every successful write through both API
// servers and fails the test for any that is missing or unreadable.
func assertNothingLost(t *testing.T, c *cluster, ws []write) {
	t.Helper()
	checked, problems := readBack(t, c, ws)
	t.Logf("read back: %d reads (every successful write through both API servers), %d lost or unreadable", checked, len(problems))
	if len(problems) > 0 {
		if len(problems) > 10 {
			problems = problems[:10]
		}
		t.Errorf("writes that returned success do not read back:\n%s", joinLines(problems))
	}
}

func joinLines(s []string) string {
	out := ""
	for _, l := range s {
		out += "  " + l + "\n"
	}
	return out
}

// sample is one readiness probe result.
type sample struct {
	at     time.Time
	ok     bool
	detail string
}

// monitor probes something at an interval and keeps the samples.
type monitor struct {
	mu      sync.Mutex
	samples []sample
	cancel  context.CancelFunc
	done    chan struct{}
}

func watch(interval time.Duration, probe func(ctx context.Context) (bool, string)) *monitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			ok, detail := probe(ctx)
			if ctx.Err() != nil {
				return // a probe cut short by stop says nothing
			}
			m.mu.Lock()
			m.samples = append(m.samples, sample{at: time.Now(), ok: ok, detail: detail})
			m.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	return m
}

func (m *monitor) stop() []sample {
	m.cancel()
	<-m.done
	return m.snapshot()
}

func (m *monitor) snapshot() []sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]sample(nil), m.samples...)
}

// waitFor polls the monitor until a sample taken after since has state
// ok, or timeout passes; it returns that sample's time.
func (m *monitor) waitFor(since time.Time, ok bool, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if at, found := firstAfter(m.snapshot(), since, ok); found {
			return at, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// firstAfter returns the time of the first sample after since whose state
// is ok.
func firstAfter(ss []sample, since time.Time, ok bool) (time.Time, bool) {
	for _, s := range ss {
		if s.at.After(since) && s.ok == ok {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// recoveredAt is when the state became good for good after since: the
// first passing sample after the last failing one (since itself when none
// failed); false while the last sample fails.
func recoveredAt(ss []sample, since time.Time) (time.Time, bool) {
	at := since
	for i, s := range ss {
		if !s.at.After(since) || s.ok {
			continue
		}
		if i == len(ss)-1 {
			return time.Time{}, false
		}
		at = ss[i+1].at
	}
	return at, true
}

// lastDetail is the detail of the last sample in state ok, for logs.
func lastDetail(ss []sample, ok bool) string {
	for i := len(ss) - 1; i >= 0; i-- {
		if ss[i].ok == ok {
			return ss[i].detail
		}
	}
	return ""
}

// anyFalse says whether a sample in [from, to] failed.
func anyFalse(ss []sample, from, to time.Time) bool {
	for _, s := range ss {
		if !s.at.Before(from) && !s.at.After(to) && !s.ok {
			return true
		}
	}
	return false
}
