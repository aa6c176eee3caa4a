package vault

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// These tests drive the client's HTTP stack against servers written here,
// some deliberately misbehaving: they check the client's defences, not
// Vault.

// testCert starts (and stops) an httptest TLS server only to borrow its
// certificate: it returns a server TLS configuration and a CA file that
// trusts it.
func testCert(t *testing.T) (*tls.Config, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.TLS.Clone(), ca
}

// rawServer is a TLS listener whose connections are served by serve, one
// goroutine each; accepted counts them.
type rawServer struct {
	addr     string
	accepted atomic.Int32
}

func startRaw(t *testing.T, cfg *tls.Config, serve func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: "https://" + lis.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// readReq reads one request and its body.
func readReq(br *bufio.Reader) (*http.Request, string, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(req.Body)
	return req, string(b), err
}

func answer(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func newTestClient(t *testing.T, addr, ca string) *api.Client {
	t.Helper()
	c, err := NewClient(Config{Address: addr, CACert: ca, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("s.test-token")
	t.Cleanup(func() { c.CloneConfig().HttpClient.CloseIdleConnections() })
	return c
}

// TestRedirects: a redirect is followed only to another configured
// address and never to a lower scheme; otherwise nothing (no token, no
// body) reaches the target and the error is unavailable and names it.
func TestRedirects(t *testing.T) {
	cfg, ca := testCert(t)
	var sawToken, sawBody atomic.Int32
	target := func(c net.Conn, br *bufio.Reader) {
		for {
			req, body, err := readReq(br)
			if err != nil {
				return
			}
			if req.Header.Get(api.AuthHeaderName) != "" {
				sawToken.Add(1)
			}
			if body != "" {
				sawBody.Add(1)
			}
			io.WriteString(c, answer(`{"data":{"ciphertext":"vault:v1:eA=="}}`))
		}
	}
	other := startRaw(t, cfg, target)
	plainLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plainAddr := "http://" + plainLis.Addr().String()
	go func() {
		for {
			c, err := plainLis.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); target(c, bufio.NewReader(c)) }()
		}
	}()
	t.Cleanup(func() { plainLis.Close() })
	redirectTo := func(loc string) *rawServer {
		return startRaw(t, cfg, func(c net.Conn, br *bufio.Reader) {
			for {
				if _, _, err := readReq(br); err != nil {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 307 Temporary Redirect\r\nLocation: %s/v1/transit/encrypt/kms\r\nContent-Length: 0\r\n\r\n", loc)
			}
		})
	}
	cases := []struct {
		name     string
		to       string
		extra    string // another configured address
		followed bool
	}{
		{name: "another host", to: other.addr},
		{name: "another configured address", to: other.addr, extra: other.addr, followed: true},
		{name: "a lower scheme, though configured", to: plainAddr, extra: plainAddr},
	}
	for _, tc := range cases {
		for _, via := range []string{"raw", "api"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				sawToken.Store(0)
				sawBody.Store(0)
				src := redirectTo(tc.to)
				addrs := src.addr
				if tc.extra != "" {
					addrs += "," + tc.extra
				}
				c := newTestClient(t, addrs, ca)
				var err error
				if via == "raw" {
					var code int
					code, _, err = NewRaw(c).Post(context.Background(), "transit/encrypt/kms", "s.test-token", []byte(`{"plaintext":"c2VlZA=="}`))
					if err == nil && code != 200 {
						err = fmt.Errorf("HTTP %d", code)
					}
				} else {
					_, err = c.Logical().Write("transit/encrypt/kms", map[string]any{"plaintext": "c2VlZA=="})
				}
				if tc.followed {
					if err != nil || sawToken.Load() != 1 {
						t.Fatalf("redirect to another configured address: err %v, requests with a token there %d", err, sawToken.Load())
					}
					return
				}
				if sawToken.Load() != 0 || sawBody.Load() != 0 {
					t.Fatalf("the redirect target got %d requests with the token and %d bodies", sawToken.Load(), sawBody.Load())
				}
				host := strings.TrimPrefix(strings.TrimPrefix(tc.to, "https://"), "http://")
				if err == nil || Classify(err) != KindUnavailable || !strings.Contains(Describe(err), strings.Split(host, ":")[0]) {
					t.Fatalf("err %v (kind %s), want unavailable naming %s", err, Classify(err), host)
				}
			})
		}
	}
}

// TestStaleAnswerIsNeverReadAsTheNext: a server that writes two answers
// in one write for one request; the second must never become the next
// call's answer.
func TestStaleAnswerIsNeverReadAsTheNext(t *testing.T) {
	cfg, ca := testCert(t)
	srv := startRaw(t, cfg, func(c net.Conn, br *bufio.Reader) {
		for {
			_, body, err := readReq(br)
			if err != nil {
				return
			}
			io.WriteString(c, answer(body)+answer(`{"stale":true}`))
		}
	})
	c := newTestClient(t, srv.addr, ca)
	raw := NewRaw(c)
	for i := range 50 {
		nonce := fmt.Sprintf(`{"nonce":%d}`, i)
		code, got, err := raw.Post(context.Background(), "transit/encrypt/kms", "", []byte(nonce))
		if err != nil || code != 200 || string(got) != nonce {
			t.Fatalf("call %d: code %d, answer %q, err %v; want its own answer %q", i, code, got, err, nonce)
		}
	}
}

// TestUnboundedAnswersFailBounded: an endless header and a flood of 1xx
// answers fail the call without the client holding what was sent.
func TestUnboundedAnswersFailBounded(t *testing.T) {
	cfg, ca := testCert(t)
	cases := map[string]struct {
		write func(w io.Writer)
		// bound is the most the client may allocate: the header limit
		// keeps those cases near nothing; a body is read up to its limit
		// (1 MiB for Transit, 4 MiB for the api package's requests, whose
		// JSON decoding grows buffers) and never whole.
		bound uint64
	}{
		"64 MiB header": {bound: 8 << 20, write: func(w io.Writer) {
			io.WriteString(w, "HTTP/1.1 200 OK\r\nX-Big: ")
			// Written from one buffer, so the server's own writes do not
			// count in the process's allocations.
			chunk := []byte(strings.Repeat("a", 64<<10))
			for range 1024 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			io.WriteString(w, "\r\nContent-Length: 2\r\n\r\n{}")
		}},
		"10,000 1xx answers": {bound: 8 << 20, write: func(w io.Writer) {
			bw := bufio.NewWriter(w)
			for range 10000 {
				if _, err := bw.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"); err != nil {
					return
				}
			}
			bw.WriteString(answer("{}"))
			bw.Flush()
		}},
		"1 GiB body": {bound: 64 << 20, write: func(w io.Writer) {
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 1<<30)
			chunk := []byte(strings.Repeat(" ", 64<<10))
			for range 1 << 14 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := startRaw(t, cfg, func(c net.Conn, br *bufio.Reader) {
				if _, _, err := readReq(br); err != nil {
					return
				}
				tc.write(c)
			})
			c := newTestClient(t, srv.addr, ca)
			for _, via := range []string{"raw", "api"} {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				var err error
				if via == "raw" {
					_, _, err = NewRaw(c).Post(context.Background(), "transit/encrypt/kms", "", []byte("{}"))
				} else {
					_, err = c.Logical().Read("secret/data/x")
				}
				runtime.ReadMemStats(&after)
				if err == nil {
					t.Fatalf("%s: the call succeeded", via)
				}
				if grew := after.TotalAlloc - before.TotalAlloc; grew > tc.bound {
					t.Fatalf("%s: the client allocated %d MiB reading it", via, grew>>20)
				}
				if Classify(err) != KindUnavailable {
					t.Fatalf("%s: err %v is %s, want unavailable", via, err, Classify(err))
				}
			}
		})
	}
}

// TestTransitAnswerOverItsLimit: Raw refuses an answer over 1 MiB, which
// the api package's requests (4 MiB) would take, with an error saying so.
func TestTransitAnswerOverItsLimit(t *testing.T) {
	cfg, ca := testCert(t)
	big := `{"data":{"x":"` + strings.Repeat("a", 2<<20) + `"}}`
	srv := startRaw(t, cfg, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readReq(br); err != nil {
				return
			}
			io.WriteString(c, answer(big))
		}
	})
	c := newTestClient(t, srv.addr, ca)
	_, _, err := NewRaw(c).Post(context.Background(), "transit/encrypt/kms", "", []byte("{}"))
	if err == nil || !errors.Is(err, ErrAnswerTooLarge) || !strings.Contains(err.Error(), "larger than 1024 KiB") {
		t.Fatalf("2 MiB transit answer: %v", err)
	}
	if _, err := c.Logical().Read("secret/data/x"); err != nil {
		t.Fatalf("2 MiB KV answer, under the 4 MiB limit: %v", err)
	}
}

// TestIdleConnectionIsReused: on a quiet client, two calls 2 s apart go
// over one TLS connection (no deadline of the first call is left on it).
func TestIdleConnectionIsReused(t *testing.T) {
	cfg, ca := testCert(t)
	srv := startRaw(t, cfg, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readReq(br); err != nil {
				return
			}
			io.WriteString(c, answer(`{}`))
		}
	})
	c := newTestClient(t, srv.addr, ca)
	raw := NewRaw(c)
	for i := range 2 {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _, err := raw.Post(ctx, "transit/encrypt/kms", "", []byte("{}"))
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Fatalf("two calls 2s apart opened %d connections, want 1", n)
	}
}

// A failover is counted once, when the client moves to the next address,
// not again for the requests it then sends there.
func TestFailoversCounted(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := "http://" + dead.Addr().String()
	dead.Close() // nothing listens there any more: connection refused
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"data":{"value":"x"}}`)
	}))
	t.Cleanup(live.Close)
	c, err := NewClient(Config{Address: deadAddr + "," + live.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := Failovers(c); got != 0 {
		t.Fatalf("Failovers before any request = %d, want 0", got)
	}
	for i := range 3 {
		if _, err := c.Logical().Read("secret/x"); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if got := Failovers(c); got != 1 {
		t.Fatalf("Failovers after three reads = %d, want 1 (one move to the live address)", got)
	}
	other, err := api.NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := Failovers(other); got != 0 {
		t.Fatalf("Failovers of a client not made by NewClient = %d, want 0", got)
	}
}
