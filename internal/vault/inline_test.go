package vault

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// These tests drive the inline transport against net/http's own server:
// they check HTTP mechanics (reuse, a closed idle connection, cancel,
// size limit), not Vault.

// inlineServer starts a TLS server with h and returns it, its count of
// accepted connections and an inline transport that trusts it.
func inlineServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32, *inlineTransport) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	it := newInlineTransport(srv.Client().Transport.(*http.Transport).TLSClientConfig)
	t.Cleanup(it.closeIdle)
	return srv, &conns, it
}

func inlinePost(t *testing.T, it *inlineTransport, ctx context.Context, url, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := it.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.WriteHeader(http.StatusOK)
	w.Write(append([]byte("got "), b...))
}

func TestInlineReusesConnection(t *testing.T) {
	srv, conns, it := inlineServer(t, echo)
	for i := range 5 {
		code, body, err := inlinePost(t, it, context.Background(), srv.URL+"/v1/x", "abc")
		if err != nil || code != 200 || body != "got abc" {
			t.Fatalf("call %d: code %d body %q err %v", i, code, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 sequential calls opened %d connections, want 1", n)
	}
}

func TestInlineResendsOnClosedIdleConnection(t *testing.T) {
	srv, conns, it := inlineServer(t, echo)
	if _, _, err := inlinePost(t, it, context.Background(), srv.URL, "one"); err != nil {
		t.Fatal(err)
	}
	// The server drops its idle connections, as Vault's listener does
	// after its idle timeout.
	srv.CloseClientConnections()
	code, body, err := inlinePost(t, it, context.Background(), srv.URL, "two")
	if err != nil || code != 200 || body != "got two" {
		t.Fatalf("after the server closed the idle connection: code %d body %q err %v", code, body, err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("opened %d connections, want 2", n)
	}
}

func TestInlineCancelStopsWaiting(t *testing.T) {
	release := make(chan struct{})
	srv, _, it := inlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		echo(w, r)
	})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := inlinePost(t, it, ctx, srv.URL+"/slow", "x")
	if err == nil || !strings.Contains(err.Error(), context.Canceled.Error()) {
		t.Fatalf("cancelled call: err %v, want context canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %s to interrupt the call", d)
	}
	if n := idleCount(it); n != 0 {
		t.Fatalf("the interrupted connection went back to the pool (%d idle)", n)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if code, body, err := inlinePost(t, it, ctx2, srv.URL+"/v1/x", "y"); err != nil || body != "got y" {
		t.Fatalf("call after a cancel: code %d body %q err %v", code, body, err)
	}
}

func TestInlineRefusesHugeAnswer(t *testing.T) {
	srv, _, it := inlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, maxAnswer+10))
	})
	if _, _, err := inlinePost(t, it, context.Background(), srv.URL, "x"); err == nil || !strings.Contains(err.Error(), "larger than 4 MiB") {
		t.Fatalf("huge answer: err %v, want a size error", err)
	}
}

func TestInlineChunkedAnswerAndClose(t *testing.T) {
	srv, conns, it := inlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("part1 "))
		w.(http.Flusher).Flush()
		w.Write([]byte("part2"))
	})
	for range 2 {
		if _, body, err := inlinePost(t, it, context.Background(), srv.URL, "x"); err != nil || body != "part1 part2" {
			t.Fatalf("chunked answer: body %q err %v", body, err)
		}
		if n := idleCount(it); n != 0 {
			t.Fatalf("a Connection: close answer left %d idle connections, want 0", n)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("opened %d connections, want 2", n)
	}
}

func idleCount(it *inlineTransport) int {
	it.mu.Lock()
	defer it.mu.Unlock()
	n := 0
	for _, cs := range it.idle {
		n += len(cs)
	}
	return n
}

func TestInlineResendsWhenEveryIdleConnectionIsGone(t *testing.T) {
	srv, _, it := inlineServer(t, echo)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	key := req.URL.Scheme + "://" + req.URL.Host
	for range 3 {
		c, err := it.dial(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		it.put(key, c)
	}
	// A Vault restart or leader change drops them all at once.
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if code, body, err := inlinePost(t, it, context.Background(), srv.URL, "z"); err != nil || code != 200 || body != "got z" {
		t.Fatalf("after every idle connection was closed: code %d body %q err %v", code, body, err)
	}
}

// rawServer answers each request on a connection with what reply returns,
// written as raw bytes.
func rawServer(t *testing.T, reply func(n int) string) (*httptest.Server, *inlineTransport) {
	t.Helper()
	srv, _, it := inlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for n := 0; ; n++ {
			if n > 0 {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
			}
			if _, err := io.WriteString(conn, reply(n)); err != nil {
				return
			}
		}
	})
	return srv, it
}

func TestInlineSkipsInformationalAnswers(t *testing.T) {
	srv, it := rawServer(t, func(n int) string {
		return fmt.Sprintf("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nanswer %d", n)
	})
	for i := range 2 {
		if code, body, err := inlinePost(t, it, context.Background(), srv.URL, "x"); err != nil || code != 200 || body != fmt.Sprintf("answer %d", i) {
			t.Fatalf("call %d: code %d body %q err %v, want 200 %q", i, code, body, err, fmt.Sprintf("answer %d", i))
		}
	}
}

func TestInlineDropsConnectionWithUnaskedBytes(t *testing.T) {
	srv, it := rawServer(t, func(n int) string {
		// An answer followed by one nobody asked for: the connection is
		// out of step and must not serve the next call.
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nanswer %d", n) +
			"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
	})
	for i := range 3 {
		if code, body, err := inlinePost(t, it, context.Background(), srv.URL, "x"); err != nil || code != 200 || body != "answer 0" {
			t.Fatalf("call %d: code %d body %q err %v, want 200 %q on a fresh connection", i, code, body, err, "answer 0")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInlineDropsIdleConnectionTheServerClosed(t *testing.T) {
	srv, conns, it := inlineServer(t, echo)
	if _, _, err := inlinePost(t, it, context.Background(), srv.URL, "one"); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if it.get("https://"+srv.Listener.Addr().String()) != nil {
		t.Fatal("get handed out an idle connection the server had closed")
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("opened %d connections, want 1", n)
	}
}

// TestInlineContextSendsAPIReadsOverHTTP1 checks that a context marked
// with Inline takes the api package's requests off HTTP/2, and that an
// unmarked one stays on it.
func TestInlineContextSendsAPIReadsOverHTTP1(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"data":{"proto":%q}}`, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Config{Address: srv.URL, CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ctx  context.Context
		want string
	}{{Inline(context.Background()), "HTTP/1.1"}, {context.Background(), "HTTP/2.0"}} {
		s, err := c.Logical().ReadWithContext(tc.ctx, "secret/x")
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Data["proto"]; got != tc.want {
			t.Fatalf("request went over %v, want %s", got, tc.want)
		}
	}
}
