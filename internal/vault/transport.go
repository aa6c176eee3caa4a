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

// transport sends every request to the first Vault address that can be
// reached, rebuilds its TLS configuration when the CA or client
// certificate files change, and refuses plain HTTP to anything but
// loopback, redirects included. It never consults the environment: no
// proxy, no VAULT_* variable.
type transport struct {
	addrs []*url.URL
	// current is the index of the address in use.
	current atomic.Int32

	files     tlsFiles
	checkEvry time.Duration
	mu        sync.Mutex
	lastCheck time.Time
	lastSum   [32]byte
	rt        atomic.Pointer[roundTrippers]
}

// roundTrippers are the two ways of sending built from one TLS
// configuration: net/http's transport for the api package's requests, and
// the inline one for Raw's.
type roundTrippers struct {
	std    *http.Transport
	inline *inlineTransport
}

func newRoundTrippers(cfg *tls.Config) *roundTrippers {
	return &roundTrippers{std: newHTTPTransport(cfg), inline: newInlineTransport(cfg)}
}

func (r *roundTrippers) closeIdle() {
	r.std.CloseIdleConnections()
	r.inline.closeIdle()
}

// inlineKey marks a request's context for the inline transport.
type inlineKey struct{}

// Inline marks ctx so that requests made with it, Raw's and the api
// package's alike, go through the inline transport: HTTP/1.1 written and
// read by the calling goroutine, which costs Vault and the caller less CPU
// than HTTP/2's connection loops. Only requests that are small, read whole
// and safe to send twice (a Transit call, a KV read; not a request that
// creates a lease) may use it: a pooled connection found dead is retried
// once on a new one.
func Inline(ctx context.Context) context.Context {
	return context.WithValue(ctx, inlineKey{}, true)
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
	t.rt.Store(newRoundTrippers(cfg))
	return t, nil
}

func newHTTPTransport(cfg *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy: nil, // never from the environment
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
	}
}

// roundTrippers returns the transports for the current files, rebuilding
// them when their content changed. A half-written pair (certificate
// renewed, key not yet) keeps the previous ones until the next check.
func (t *transport) roundTrippers() *roundTrippers {
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
	old := t.rt.Swap(newRoundTrippers(cfg))
	// Connections made with the old certificates close once idle.
	old.closeIdle()
	return t.rt.Load()
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// current transports.
func (t *transport) CloseIdleConnections() { t.rt.Load().closeIdle() }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !(req.URL.Scheme == "http" && isLoopback(req.URL.Hostname())) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("refusing %s://%s: plain http is allowed only to a loopback address", req.URL.Scheme, req.URL.Hostname())
	}
	rts := t.roundTrippers()
	var rt http.RoundTripper = rts.std
	if req.Context().Value(inlineKey{}) != nil {
		rt = rts.inline
	}
	// Requests to the configured address (the api client only knows the
	// first) go to whichever address is current; a redirect elsewhere is
	// sent as it is.
	primary := t.addrs[0]
	if len(t.addrs) == 1 || req.URL.Scheme != primary.Scheme || req.URL.Host != primary.Host {
		return rt.RoundTrip(req)
	}
	body, err := takeBody(req)
	if err != nil {
		return nil, err
	}
	start := int(t.current.Load())
	var lastErr error
	for i := range t.addrs {
		idx := (start + i) % len(t.addrs)
		a := t.addrs[idx]
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = a.Scheme, a.Host, ""
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			r.ContentLength = int64(len(body))
		}
		resp, err := rt.RoundTrip(r)
		if err == nil {
			if idx != start {
				t.current.CompareAndSwap(int32(start), int32(idx))
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
