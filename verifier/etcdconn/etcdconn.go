// Package etcdconn opens the read-only etcd connection the verifier and the
// auditor scan through. Every call is bounded in time, and a failure names
// the endpoint and the cause (refused, TLS, no answer) instead of hanging or
// saying only "context deadline exceeded".
package etcdconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Config is how to reach etcd.
type Config struct {
	Endpoints []string
	// CACert, Cert and Key are files; all empty means plain HTTP.
	CACert, Cert, Key string
	// Username and Password log in to etcd with auth enabled; a user
	// whose role may only read the prefix is enough.
	Username, Password string
	// DialTimeout bounds connecting and the first answer (default 5s).
	DialTimeout time.Duration
	// RequestTimeout bounds each request (default 30s).
	RequestTimeout time.Duration
}

// Client is an etcd client whose reads are each bounded by RequestTimeout.
type Client struct {
	*clientv3.Client
	cfg Config
	tls *tls.Config
}

// Dial connects and checks that every endpoint answers within DialTimeout.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := checkEndpoints(cfg.Endpoints); err != nil {
		return nil, err
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	c := &Client{cfg: cfg}
	ccfg := clientv3.Config{
		Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout,
		Username: cfg.Username, Password: cfg.Password,
		// Silence the client's own logger: errors are returned with context.
		Logger: zap.NewNop(),
		// Pages are bounded by bytes well below this; it guards against a
		// single huge value only.
		MaxCallRecvMsgSize: 64 << 20,
	}
	if cfg.CACert != "" || cfg.Cert != "" || cfg.Key != "" {
		info := transport.TLSInfo{TrustedCAFile: cfg.CACert, CertFile: cfg.Cert, KeyFile: cfg.Key}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS (--etcd-cacert, --etcd-cert, --etcd-key): %w", err)
		}
		ccfg.TLS, c.tls = tc, tc
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, c.explain(fmt.Sprintf("connect to etcd %s", strings.Join(cfg.Endpoints, ",")), err)
	}
	c.Client = cli
	// clientv3.New does not wait for a connection: ask each endpoint once
	// so a wrong address fails here, within DialTimeout, by name.
	for _, ep := range cfg.Endpoints {
		sctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		_, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			cli.Close()
			return nil, c.explainEndpoint(ep, err)
		}
	}
	return c, nil
}

// Get reads under RequestTimeout; an error names the endpoints and cause.
func (c *Client) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	resp, err := c.Client.Get(rctx, key, opts...)
	if err != nil && ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return nil, c.explain(fmt.Sprintf("etcd %s: no answer within %s", strings.Join(c.cfg.Endpoints, ","), c.cfg.RequestTimeout), err)
	}
	return resp, err
}

func (c *Client) explainEndpoint(ep string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "context deadline exceeded") {
		return fmt.Errorf("etcd %s: no answer within %s: %s", ep, c.cfg.DialTimeout, Diagnose(ep, c.tls, c.cfg.DialTimeout))
	}
	return fmt.Errorf("etcd %s: %w", ep, err)
}

func (c *Client) explain(what string, err error) error {
	var causes []string
	for _, ep := range c.cfg.Endpoints {
		causes = append(causes, ep+": "+Diagnose(ep, c.tls, c.cfg.DialTimeout))
	}
	return fmt.Errorf("%s (%s): %w", what, strings.Join(causes, "; "), err)
}

// Diagnose connects to endpoint by hand to tell why gRPC could not: the
// address refuses, TLS fails (and why), or the peer accepts but never
// answers. It sends no etcd request, only the HTTP/2 preface.
func Diagnose(endpoint string, tc *tls.Config, timeout time.Duration) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "not a URL"
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		return "cannot connect: " + err.Error()
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if u.Scheme == "https" {
		cfg := &tls.Config{}
		if tc != nil {
			cfg = tc.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		cfg.NextProtos = []string{"h2"}
		tlsConn := tls.Client(conn, cfg)
		if err := tlsConn.Handshake(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "TCP connects but the TLS handshake gets no answer"
			}
			return "TLS handshake failed: " + err.Error()
		}
		conn = tlsConn
	}
	// Send the HTTP/2 client preface and an empty SETTINGS frame: any
	// gRPC server answers with its own SETTINGS.
	preface := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)
	if _, err := conn.Write(preface); err != nil {
		return "the peer closed the connection: " + err.Error()
	}
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "TCP connects but the peer never answers (not etcd, or etcd is stuck)"
		}
		return "the peer closed the connection: " + err.Error()
	}
	return "the peer answers; check credentials and that it is etcd"
}

// checkEndpoints refuses what no connection could fix: no endpoint, or one
// that is not an http(s) URL.
func checkEndpoints(endpoints []string) error {
	if len(endpoints) == 0 {
		return errors.New("--etcd-endpoints is empty: name at least one etcd client URL")
	}
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("--etcd-endpoints: %q is not a URL such as https://10.0.0.1:2379", ep)
		}
	}
	return nil
}
