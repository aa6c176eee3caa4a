package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ParseAddresses parses a --vault-addr value: one address or several
// separated by commas. Each must be https://host[:port], or http:// to a
// loopback address; nothing after the port.
func ParseAddresses(s string) ([]*url.URL, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--vault-addr is empty: give Vault's address, such as https://vault.example:8200")
	}
	var out []*url.URL
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		u, err := url.Parse(f)
		if err != nil || u.Host == "" || u.Opaque != "" {
			return nil, fmt.Errorf("--vault-addr %q: not an address such as https://vault.example:8200", f)
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("--vault-addr %q: give only scheme, host and port", f)
		}
		switch u.Scheme {
		case "https":
		case "http":
			if !isLoopback(u.Hostname()) {
				return nil, fmt.Errorf("--vault-addr %q: plain http:// is allowed only to a loopback address (a local Vault Agent or dev server); use https://", f)
			}
		default:
			return nil, fmt.Errorf("--vault-addr %q: the scheme must be https (or http to a loopback address)", f)
		}
		u.Path = ""
		out = append(out, u)
	}
	return out, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsFiles are the PEM files the TLS configuration is built from.
type tlsFiles struct{ CA, Cert, Key string }

// fingerprint hashes the files' contents; a read error is part of the
// result, so a file that disappears and comes back is noticed too.
func (f tlsFiles) fingerprint() [32]byte {
	h := sha256.New()
	for _, p := range []string{f.CA, f.Cert, f.Key} {
		if p == "" {
			h.Write([]byte{0})
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			h.Write([]byte("error:" + err.Error()))
		}
		h.Write(b)
		h.Write([]byte{0})
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// tlsConfig builds a TLS 1.2+ client configuration from the files.
func (f tlsFiles) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("read --vault-ca-cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--vault-ca-cert %q holds no PEM certificate", f.CA)
		}
		cfg.RootCAs = pool
	}
	if f.Cert != "" || f.Key != "" {
		if f.Cert == "" || f.Key == "" {
			return nil, errors.New("a client certificate needs both --client-cert and --client-key")
		}
		kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("load client certificate --client-cert %q: %w", f.Cert, err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, nil
}

// Limits on what Vault may send back. Headers are small in every Vault
// answer; 64 KiB also bounds any run of 1xx answers before the real one
// (net/http counts their headers against the same limit).
const (
	maxAnswerHeader = 64 << 10
	// maxAnswer bounds the body of an answer to a request made through the
	// api package (a KV read of a 1 MiB Kubernetes Secret is well below).
	maxAnswer = 4 << 20
	// idleTimeout retires idle connections well before Vault's listener
	// (5 minutes by default) or a load balancer drops them.
	idleTimeout = 30 * time.Second
)

// transport sends every request to the first Vault address that can be
// reached, rebuilds its TLS configuration when the CA or client
// certificate files change, refuses plain HTTP to anything but loopback
// and refuses any host that is not one of the configured addresses (so a
// redirect never carries the token or a body elsewhere). It never
// consults the environment: no proxy, no VAULT_* variable.
type transport struct {
	addrs []*url.URL
	// current is the index of the address in use; failovers counts its
	// moves to another address.
	current   atomic.Int32
	failovers atomic.Uint64

	files     tlsFiles
	checkEvry time.Duration
	mu        sync.Mutex
	lastCheck time.Time
	lastSum   [32]byte
	rt        atomic.Pointer[http.Transport]
}

func newTransport(addrs []*url.URL, files tlsFiles, check time.Duration) (*transport, error) {
	if check <= 0 {
		check = 2 * time.Second
	}
	t := &transport{addrs: addrs, files: files, checkEvry: check}
	cfg, err := files.tlsConfig()
	if err != nil {
		return nil, err
	}
	t.lastSum, t.lastCheck = files.fingerprint(), time.Now()
	t.rt.Store(newHTTPTransport(cfg))
	return t, nil
}

// newHTTPTransport speaks HTTP/1.1 only: on two cores a Transit call or a
// KV read cost Vault and the caller less CPU over a pool of HTTP/1.1
// connections than over HTTP/2's connection loops (e2e/bench -only
// kvreads and -only plugin measure it). Deadlines come from each
// request's context, never from the connection, so a pooled connection
// stays usable for idleTimeout.
func newHTTPTransport(cfg *tls.Config) *http.Transport {
	c := cfg.Clone()
	c.NextProtos = []string{"http/1.1"}
	return &http.Transport{
		Proxy:               nil, // never from the environment
		DialContext:         dialCounting,
		TLSClientConfig:     c,
		TLSHandshakeTimeout: 10 * time.Second,
		// A non-nil empty map turns HTTP/2 off.
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
		ForceAttemptHTTP2:      false,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        idleTimeout,
		MaxResponseHeaderBytes: maxAnswerHeader,
		ExpectContinueTimeout:  0,
	}
}

// current returns the transport for the current files, rebuilding it when
// their content changed. A half-written pair (certificate renewed, key not
// yet) keeps the previous one until the next check.
func (t *transport) currentRT() *http.Transport {
	if t.files == (tlsFiles{}) {
		return t.rt.Load()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if now.Sub(t.lastCheck) < t.checkEvry {
		return t.rt.Load()
	}
	t.lastCheck = now
	sum := t.files.fingerprint()
	if sum == t.lastSum {
		return t.rt.Load()
	}
	cfg, err := t.files.tlsConfig()
	if err != nil {
		return t.rt.Load()
	}
	t.lastSum = sum
	old := t.rt.Swap(newHTTPTransport(cfg))
	// Connections made with the old certificates close once idle.
	old.CloseIdleConnections()
	return t.rt.Load()
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// current transport.
func (t *transport) CloseIdleConnections() { t.rt.Load().CloseIdleConnections() }

// configured tells whether u's scheme and host are one of --vault-addr.
func (t *transport) configured(u *url.URL) bool {
	for _, a := range t.addrs {
		if a.Scheme == u.Scheme && strings.EqualFold(a.Host, u.Host) {
			return true
		}
	}
	return false
}

// TargetError is a request refused before it was sent: its host is not
// one of --vault-addr (a redirect elsewhere, say), or it would go over
// plain http to a host that is not loopback. Vault is unavailable to the
// caller until whatever sent it there is fixed.
type TargetError struct {
	Host   string
	Reason string
}

func (e *TargetError) Error() string {
	return "refusing to send a request to " + e.Host + ": " + e.Reason
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !(req.URL.Scheme == "http" && isLoopback(req.URL.Hostname())) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &TargetError{Host: req.URL.Hostname(), Reason: "plain http is allowed only to a loopback address"}
	}
	if !t.configured(req.URL) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &TargetError{Host: req.URL.Host, Reason: "not one of --vault-addr (a redirect is followed only to another configured address)"}
	}
	body, err := takeBody(req)
	if err != nil {
		return nil, err
	}
	resp, err := t.send(req, body)
	if err != nil || resp.StatusCode < 300 || resp.StatusCode >= 400 {
		return limitAnswer(resp, err)
	}
	// A redirect is followed here, once, and only to another configured
	// address over the same scheme (a standby naming the active node); the
	// api package and Raw never see a 3xx.
	loc, target, err := redirectTarget(req, resp)
	if err != nil {
		return nil, err
	}
	if (resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusPermanentRedirect) ||
		!t.configured(loc) || (req.URL.Scheme == "https" && loc.Scheme != "https") {
		return nil, &TargetError{Host: loc.Host, Reason: fmt.Sprintf("vault redirected there (HTTP %d); only one redirect to another --vault-addr over the same scheme is followed", resp.StatusCode)}
	}
	r := req.Clone(req.Context())
	r.URL, r.Host = target, ""
	resp, err = t.send(r, body)
	if err == nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		return nil, &TargetError{Host: r.URL.Host, Reason: fmt.Sprintf("a second redirect (HTTP %d) is not followed", resp.StatusCode)}
	}
	return limitAnswer(resp, err)
}

// redirectTarget reads a 3xx answer's Location, relative to req, and
// closes the answer.
func redirectTarget(req *http.Request, resp *http.Response) (*url.URL, *url.URL, error) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		return nil, nil, &TargetError{Host: req.URL.Host, Reason: fmt.Sprintf("vault answered a redirect (HTTP %d) without a usable location", resp.StatusCode)}
	}
	return loc, req.URL.ResolveReference(loc), nil
}

// countingConn counts the reads that returned bytes, so that an answer
// can be told from one that was already buffered before its request went
// out (see checkFresh).
type countingConn struct {
	net.Conn
	reads atomic.Uint64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

var dialer = &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

func dialCounting(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c}, nil
}

// errStaleAnswer: the answer was read before its request was sent.
var errStaleAnswer = errors.New("an answer arrived before its request was sent (two answers to one request); the connection is closed")

// roundTripFresh sends r on rt and refuses an answer that reached the
// client before r was on its connection. A server (or anything between)
// that writes two answers for one request leaves the second in net/http's
// buffer; net/http closes such a connection only if its read loop looks
// before the next request takes the connection, and the next caller can
// win that race and be handed the stale answer as its own. A genuine
// answer always takes at least one read from the connection after the
// connection was handed to its request.
//
// A request that is safe to send twice (a GET, or one marked with an
// Idempotency-Key header as Raw's Transit calls are) is sent once more on
// another connection; any other fails unavailable, as it may have had its
// effect.
func roundTripFresh(rt http.RoundTripper, build func() *http.Request) (*http.Response, error) {
	r := build()
	resp, err := roundTripOnce(rt, r)
	if errors.Is(err, errStaleAnswer) && replayable(r) && r.Context().Err() == nil {
		resp, err = roundTripOnce(rt, build())
	}
	return resp, err
}

// replayable follows net/http's own rule for requests it may resend.
func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := r.Header["Idempotency-Key"]
	_, b := r.Header["X-Idempotency-Key"]
	return a || b
}

func roundTripOnce(rt http.RoundTripper, r *http.Request) (*http.Response, error) {
	var conn *countingConn
	var mark uint64
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		nc := i.Conn
		if tc, ok := nc.(*tls.Conn); ok {
			nc = tc.NetConn()
		}
		if c, ok := nc.(*countingConn); ok {
			conn, mark = c, c.reads.Load()
		}
	}}
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	resp, err := rt.RoundTrip(r)
	if err != nil || conn == nil || conn.reads.Load() != mark {
		return resp, err
	}
	resp.Body.Close()
	conn.Close()
	return nil, fmt.Errorf("%s: %w", r.URL.Host, errStaleAnswer)
}

// send sends req with body to its address, or, when that is the first
// configured address, to whichever address is in use, moving on when one
// cannot be reached.
func (t *transport) send(req *http.Request, body []byte) (*http.Response, error) {
	rt := t.currentRT()
	withBody := func(r *http.Request) *http.Request {
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			r.ContentLength = int64(len(body))
		}
		return r
	}
	primary := t.addrs[0]
	if len(t.addrs) == 1 || req.URL.Scheme != primary.Scheme || req.URL.Host != primary.Host {
		return roundTripFresh(rt, func() *http.Request { return withBody(req.Clone(req.Context())) })
	}
	start := int(t.current.Load())
	var lastErr error
	for i := range t.addrs {
		idx := (start + i) % len(t.addrs)
		a := t.addrs[idx]
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = a.Scheme, a.Host, ""
		resp, err := roundTripFresh(rt, func() *http.Request { return withBody(r.Clone(r.Context())) })
		if err == nil {
			if idx != start && t.current.CompareAndSwap(int32(start), int32(idx)) {
				t.failovers.Add(1)
			}
			return resp, nil
		}
		lastErr = err
		if !isConnectFailure(err) || req.Context().Err() != nil {
			return nil, err
		}
	}
	return nil, lastErr
}

// ErrAnswerTooLarge is returned while reading an answer body longer than
// the limit of its request.
var ErrAnswerTooLarge = errors.New("vault's answer is larger than the limit for this request")

// limitAnswer makes resp's body fail with ErrAnswerTooLarge past
// maxAnswer bytes, for the api package's requests, which read bodies
// whole without a limit of their own.
func limitAnswer(resp *http.Response, err error) (*http.Response, error) {
	if err != nil || resp == nil {
		return resp, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: maxAnswer}
	return resp, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%w (%d MiB)", ErrAnswerTooLarge, maxAnswer>>20)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// takeBody reads and closes req's body, so that it can be sent again; nil
// when there is none.
func takeBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}

// isConnectFailure tells whether err happened before the request could
// have reached Vault, so sending it to another address is safe.
func isConnectFailure(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var de *net.DNSError
	return errors.As(err, &de)
}
