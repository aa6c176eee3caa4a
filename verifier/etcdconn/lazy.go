package etcdconn

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Lazy connects on its first read, and again on the next read after a
// failed connection. A service that reads etcd on a schedule (the
// auditor) starts with it whether etcd answers or not, serves its health
// and metrics, and reports an unreachable etcd as failed scans with the
// reason, which its alerts and EncryptionStatus show, instead of exiting
// before anything could say why. One-shot commands use Dial and fail fast.
type Lazy struct {
	cfg Config

	mu sync.Mutex
	c  *Client
}

// NewLazy checks what can be checked without a connection (the endpoints'
// form), so a wrong flag still stops the program at once.
func NewLazy(cfg Config) (*Lazy, error) {
	if err := checkEndpoints(cfg.Endpoints); err != nil {
		return nil, err
	}
	return &Lazy{cfg: cfg}, nil
}

// Get reads through the connection, making it first if there is none.
func (l *Lazy) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Get(ctx, key, opts...)
}

// client holds the lock while it dials (at most DialTimeout per endpoint)
// so concurrent readers wait for one attempt instead of making several.
func (l *Lazy) client(ctx context.Context) (*Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c != nil {
		return l.c, nil
	}
	c, err := Dial(ctx, l.cfg)
	if err != nil {
		return nil, err
	}
	l.c = c
	return c, nil
}

// Close closes the connection, if one was made.
func (l *Lazy) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		return nil
	}
	err := l.c.Close()
	l.c = nil
	return err
}
