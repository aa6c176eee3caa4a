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
	nc net.Conn
	// raw is the TCP connection under nc, checked before reuse.
	raw      net.Conn
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

// dropIdle closes the idle connections to one address.
func (t *inlineTransport) dropIdle(key string) {
	t.mu.Lock()
	cs := t.idle[key]
	delete(t.idle, key)
	t.mu.Unlock()
	for _, c := range cs {
		c.nc.Close()
	}
}

// get returns an idle connection to key that is young enough and has
// nothing waiting to be read, or nil.
func (t *inlineTransport) get(key string) *inlineConn {
	for {
		t.mu.Lock()
		cs := t.idle[key]
		if len(cs) == 0 {
			t.mu.Unlock()
			return nil
		}
		c := cs[len(cs)-1]
		t.idle[key] = cs[:len(cs)-1]
		t.mu.Unlock()
		// Anything readable on an idle connection (an unasked answer,
		// the server's close) means it is out of step or gone.
		if time.Since(c.lastUsed) < inlineIdleLimit && c.br.Buffered() == 0 && !readable(c.raw) {
			return c
		}
		c.nc.Close()
	}
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
	raw := nc
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
	return &inlineConn{nc: nc, raw: raw, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 4096)}, nil
}

func (t *inlineTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := takeBody(req)
	if err != nil {
		return nil, err
	}
	key := req.URL.Scheme + "://" + req.URL.Host
	// A pooled connection the server has meanwhile closed fails before
	// any answer arrives; the request is then sent once more on a new
	// connection, which Raw's requests allow. The other idle connections
	// to that address most likely went with it (a restart, a leader
	// change), so they are dropped too.
	for attempt := 0; ; attempt++ {
		var c *inlineConn
		if attempt == 0 {
			c = t.get(key)
		}
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
		var ne net.Error
		timedOut := errors.As(err, &ne) && ne.Timeout()
		if reused && !answered && !timedOut && attempt == 0 && req.Context().Err() == nil {
			t.dropIdle(key)
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
	d, _ := ctx.Deadline() // zero: none
	if err := c.nc.SetDeadline(d); err != nil {
		return nil, false, fmt.Errorf("set deadline: %w", err)
	}
	// A failure to interrupt shows as the call running to its deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
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
	if r.Close || req.Close || c.br.Buffered() > 0 {
		// Bytes beyond the answer would be read as the next one's.
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
	if len(body) > 0 {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	if err := out.Write(c.bw); err != nil {
		return nil, false, fmt.Errorf("send request: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, false, fmt.Errorf("send request: %w", err)
	}
	r, err := http.ReadResponse(c.br, out)
	// Informational answers (100 Continue, 103 Early Hints) precede the
	// real one; none is asked for, but one must not be taken for it.
	for err == nil && r.StatusCode >= 100 && r.StatusCode < 200 && r.StatusCode != http.StatusSwitchingProtocols {
		r, err = http.ReadResponse(c.br, out)
	}
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
