package harness

import (
	"fmt"
	"os"
	"sync"
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
