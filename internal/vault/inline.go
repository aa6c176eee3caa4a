package vault

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// inlineTransport sends HTTP/1.1 requests from the calling goroutine: it
// writes the request and reads the answer on a pooled connection itself.
// net/http's transport hands each request to a connection's write loop
// and the answer back from its read loop, and HTTP/2 adds its own loops on
// both ends; on a busy two-core host those wake-ups were most of what a
// lone Transit call spent beyond Vault's own work. It serves only Raw,
// whose requests are small, are read whole, and are safe to send twice.
type inlineTransport struct {
	tls    *tls.Config
	dialer net.Dialer

	mu   sync.Mutex
	idle map[string][]*inlineConn
}

type inlineConn struct {
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
}

const (
	// maxIdleInline bounds the idle connections kept per address.
	maxIdleInline = 32
	// inlineIdleLimit retires idle connections well before Vault's
	// listener (5 minutes by default) or a load balancer drops them.
	inlineIdleLimit = 30 * time.Second
)

// aLongTimeAgo is a deadline in the past, to interrupt a blocked read or
// write.
var aLongTimeAgo = time.Unix(1, 0)

func newInlineTransport(cfg *tls.Config) *inlineTransport {
	c := cfg.Clone()
	c.NextProtos = []string{"http/1.1"}
	return &inlineTransport{
		tls:    c,
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		idle:   map[string][]*inlineConn{},
	}
}

// closeIdle closes every idle connection.
func (t *inlineTransport) closeIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*inlineConn{}
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.nc.Close()
		}
	}
}

func (t *inlineTransport) get(key string) *inlineConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.idle[key]
	for len(cs) > 0 {
		c := cs[len(cs)-1]
		cs = cs[:len(cs)-1]
		if time.Since(c.lastUsed) < inlineIdleLimit {
			t.idle[key] = cs
			return c
		}
		c.nc.Close()
	}
	t.idle[key] = cs
	return nil
}

func (t *inlineTransport) put(key string, c *inlineConn) {
	c.lastUsed = time.Now()
	t.mu.Lock()
	if len(t.idle[key]) < maxIdleInline {
		t.idle[key] = append(t.idle[key], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.nc.Close()
	}
}

func (t *inlineTransport) dial(ctx context.Context, u *http.Request) (*inlineConn, error) {
	host := u.URL.Host
	if u.URL.Port() == "" {
		port := "443"
		if u.URL.Scheme == "http" {
			port = "80"
		}
		host = net.JoinHostPort(u.URL.Hostname(), port)
	}
	nc, err := t.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if u.URL.Scheme == "https" {
		cfg := t.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = u.URL.Hostname()
		}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", u.URL.Host, err)
		}
		nc = tc
	}
	return &inlineConn{nc: nc, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 4096)}, nil
}

func (t *inlineTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
		body = b
	}
	key := req.URL.Scheme + "://" + req.URL.Host
	// A pooled connection the server has meanwhile closed fails before
	// any answer arrives; the request is then sent once more on a new
	// connection, which Raw's requests allow.
	for attempt := 0; ; attempt++ {
		c := t.get(key)
		reused := c != nil
		if c == nil {
			var err error
			if c, err = t.dial(req.Context(), req); err != nil {
				return nil, err
			}
		}
		resp, answered, err := t.exchange(req, c, body)
		if err == nil {
			return resp, nil
		}
		c.nc.Close()
		if reused && !answered && attempt == 0 && req.Context().Err() == nil {
			continue
		}
		return nil, err
	}
}

// exchange sends req on c and reads the whole answer. answered tells
// whether any of the answer arrived. On success c is back in the pool; on
// failure the caller closes it.
func (t *inlineTransport) exchange(req *http.Request, c *inlineConn, body []byte) (*http.Response, bool, error) {
	ctx := req.Context()
	if d, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(d)
	} else {
		c.nc.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	r, answered, err := roundTrip(c, req, body)
	if !stop() {
		// Cancelled meanwhile: the connection's deadline is spoilt.
		if err == nil {
			c.nc.Close()
			return r, true, nil
		}
		return nil, answered, fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if err != nil {
		return nil, answered, err
	}
	if r.Close || req.Close {
		c.nc.Close()
	} else {
		t.put(req.URL.Scheme+"://"+req.URL.Host, c)
	}
	return r, true, nil
}

// roundTrip writes req with body on c and reads the answer whole.
func roundTrip(c *inlineConn, req *http.Request, body []byte) (*http.Response, bool, error) {
	out := req.Clone(req.Context())
	out.Body, out.ContentLength = nil, 0
	if body != nil {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	if err := out.Write(c.bw); err != nil {
		return nil, false, fmt.Errorf("send request: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, false, fmt.Errorf("send request: %w", err)
	}
	r, err := http.ReadResponse(c.br, out)
	if err != nil {
		return nil, c.br.Buffered() > 0, fmt.Errorf("read answer: %w", err)
	}
	answer, err := io.ReadAll(io.LimitReader(r.Body, maxAnswer+1))
	r.Body.Close()
	if err != nil {
		return nil, true, fmt.Errorf("read answer: %w", err)
	}
	if len(answer) > maxAnswer {
		return nil, true, errors.New("vault's answer is larger than 4 MiB")
	}
	r.Body = io.NopCloser(bytes.NewReader(answer))
	r.ContentLength = int64(len(answer))
	return r, true, nil
}
