package etcdconn

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// silentListener accepts TCP connections and never answers, like a wrong
// port on a host whose firewall lets the packets in, or a stuck proxy.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // keep open, never write
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

func TestDialNeverAnswering(t *testing.T) {
	ep := silentListener(t)
	start := time.Now()
	_, err := Dial(context.Background(), Config{Endpoints: []string{ep}, DialTimeout: 500 * time.Millisecond})
	took := time.Since(start)
	if err == nil {
		t.Fatal("Dial to a peer that never answers succeeded")
	}
	// The bound: the dial timeout for the status call plus the same again
	// for the diagnosis, with slack for a loaded machine.
	if took > 5*time.Second {
		t.Fatalf("Dial took %s with a 500ms timeout", took)
	}
	for _, want := range []string{ep, "no answer within 500ms", "never answers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestDialRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "http://" + l.Addr().String()
	l.Close()
	_, err = Dial(context.Background(), Config{Endpoints: []string{ep}, DialTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), ep) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Dial to a closed port: %v, want an error naming %s and the refusal", err, ep)
	}
}

func TestDialBadInput(t *testing.T) {
	for _, eps := range [][]string{nil, {"127.0.0.1:2379"}, {"ftp://x:1"}} {
		if _, err := Dial(context.Background(), Config{Endpoints: eps}); err == nil || !strings.Contains(err.Error(), "--etcd-endpoints") {
			t.Errorf("Dial(%v) = %v, want an error naming --etcd-endpoints", eps, err)
		}
	}
	if _, err := Dial(context.Background(), Config{Endpoints: []string{"https://127.0.0.1:1"}, CACert: "/nonexistent/ca.pem"}); err == nil || !strings.Contains(err.Error(), "--etcd-cacert") {
		t.Errorf("missing CA file: %v", err)
	}
}

// TestLazyConnectsOnRead: NewLazy refuses malformed endpoints at once but
// makes no connection; a read against a port nobody serves fails with the
// endpoint named, and the next read tries again rather than keeping the
// first failure.
func TestLazyConnectsOnRead(t *testing.T) {
	if _, err := NewLazy(Config{Endpoints: []string{"127.0.0.1:2379"}}); err == nil {
		t.Fatal("NewLazy accepted an endpoint without a scheme")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "http://" + l.Addr().String()
	l.Close()
	lazy, err := NewLazy(Config{Endpoints: []string{ep}, DialTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatalf("NewLazy dialled or refused a well-formed endpoint: %v", err)
	}
	defer lazy.Close()
	for i := 0; i < 2; i++ {
		_, err := lazy.Get(context.Background(), "/registry/secrets/", nil...)
		if err == nil || !strings.Contains(err.Error(), ep) {
			t.Fatalf("read %d against a closed port: %v, want an error naming %s", i, err, ep)
		}
		if lazy.c != nil {
			t.Fatalf("read %d kept a client after a failed connection", i)
		}
	}
}
