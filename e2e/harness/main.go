package harness

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Main is an Env for commands (the demo, the benchmarks): Fatalf prints,
// cleans up and exits; Close runs the cleanups in reverse order.
type Main struct {
	mu       sync.Mutex
	cleanups []func()
	Quiet    bool
}

func (m *Main) Helper() {}

func (m *Main) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}

func (m *Main) Logf(format string, args ...any) {
	if !m.Quiet {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}

func (m *Main) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
	m.Close()
	os.Exit(1)
}

func (m *Main) TempDir() string {
	d, err := os.MkdirTemp("", "vaultkms")
	if err != nil {
		m.Fatalf("temp dir: %v", err)
	}
	m.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// StopOnSignal runs the cleanups and exits on SIGINT or SIGTERM, so that
// processes started without a parent-death signal (envtest's etcd and
// kube-apiserver) are stopped too.
func (m *Main) StopOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "\nstopping...")
		m.Close()
		os.Exit(130)
	}()
}

// Close runs the cleanups, newest first.
func (m *Main) Close() {
	m.mu.Lock()
	cs := m.cleanups
	m.cleanups = nil
	m.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
