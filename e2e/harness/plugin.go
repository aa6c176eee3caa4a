package harness

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/vaultkms/vaultkms/internal/logging"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/kmsplugin"
)

// Plugin is an in-process vaultkms plugin serving on a unix socket.
type Plugin struct {
	Socket   string
	Plugin   *kmsplugin.Plugin
	Session  *vault.Session
	Registry *prometheus.Registry
	// Log receives the plugin's log lines.
	Log *SyncBuffer
}

// PluginOptions configures StartPlugin.
type PluginOptions struct {
	Mount, Key string
	// Method logs in to Vault; the default is the root token from a file.
	Method          vault.Method
	RefreshInterval time.Duration
	AssociatedData  []byte
	// ClientCert and ClientKey are presented to Vault (cert auth).
	ClientCert, ClientKey string
	// FilePoll is how often a token file is checked for changes.
	FilePoll time.Duration
	// MaxInFlight caps concurrent Transit requests per operation.
	MaxInFlight int
	// MaxQueue caps calls waiting for Vault per operation.
	MaxQueue int
	// Addr overrides the Vault address (a comma-separated list, say);
	// CACert overrides the CA file.
	Addr, CACert string
	// Namespace is recorded in key_id.
	Namespace string
	// Backoff, when set, replaces the session's login back-off.
	Backoff *vault.BackoffPolicy
	// FileCheckInterval is how often the CA and client certificate files
	// are checked for changes.
	FileCheckInterval time.Duration
}

// StartPlugin serves a plugin against v; it stops on cleanup.
func StartPlugin(env Env, v *Vault, opts PluginOptions) *Plugin {
	env.Helper()
	if opts.Mount == "" {
		opts.Mount = "transit"
	}
	if opts.Method == nil {
		opts.Method = vault.TokenFile{Path: TokenFile(env, v.RootToken)}
	}
	if opts.Addr == "" {
		opts.Addr = v.Addr
	}
	if opts.CACert == "" {
		opts.CACert = v.CA.CertFile
	}
	client, err := vault.NewClient(vault.Config{Address: opts.Addr, CACert: opts.CACert, Timeout: 5 * time.Second, ClientCert: opts.ClientCert, ClientKey: opts.ClientKey, FileCheckInterval: opts.FileCheckInterval})
	if err != nil {
		env.Fatalf("%v", err)
	}
	p := &Plugin{Socket: filepath.Join(SocketDir(env), "kms.sock"), Registry: kmsplugin.NewRegistry(), Log: &SyncBuffer{}}
	log, err := logging.New(p.Log, "text", "debug")
	if err != nil {
		env.Fatalf("%v", err)
	}
	p.Session = vault.NewSession(client, opts.Method, log)
	if opts.FilePoll > 0 {
		p.Session.FilePoll = opts.FilePoll
	}
	if opts.Backoff != nil {
		p.Session.Backoff = *opts.Backoff
	}
	p.Plugin = kmsplugin.New(kmsplugin.Config{Namespace: opts.Namespace, Mount: opts.Mount, Key: opts.Key, RefreshInterval: opts.RefreshInterval, AssociatedData: opts.AssociatedData, MaxInFlight: opts.MaxInFlight, MaxQueue: opts.MaxQueue},
		kmsplugin.NewTransit(client, opts.Mount, opts.Key, opts.AssociatedData), p.Session, kmsplugin.NewMetrics(p.Registry), nil, log)
	lis, err := kmsplugin.ListenUnix(p.Socket, 0o600, -1)
	if err != nil {
		env.Fatalf("%v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); p.Session.Run(ctx) }()
	go func() {
		defer wg.Done()
		if p.Session.WaitReady(ctx) == nil {
			p.Plugin.Run(ctx)
		}
	}()
	go func() { defer wg.Done(); kmsplugin.Serve(ctx, lis, p.Plugin, 5*time.Second) }()
	env.Cleanup(func() {
		cancel()
		wg.Wait()
		os.Remove(p.Socket)
	})
	return p
}

// WaitKeyID waits until the plugin reports a key_id and returns it.
func (p *Plugin) WaitKeyID(env Env, timeout time.Duration) string {
	env.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if id := p.Plugin.CurrentKeyID(); id != "" {
			return id
		}
		time.Sleep(20 * time.Millisecond)
	}
	env.Fatalf("plugin reported no key_id within %s; health: %s\n%s", timeout, p.Plugin.Health(), p.Log.String())
	return ""
}

// Client returns a KMS v2 gRPC client of the plugin's socket.
func (p *Plugin) Client(env Env) kmsapi.KeyManagementServiceClient {
	env.Helper()
	return DialKMS(env, p.Socket)
}

// DialKMS connects to a KMS v2 plugin's unix socket the way kube-apiserver does.
func DialKMS(env Env, socket string) kmsapi.KeyManagementServiceClient {
	env.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		env.Fatalf("dial %s: %v", socket, err)
	}
	env.Cleanup(func() { conn.Close() })
	return kmsapi.NewKeyManagementServiceClient(conn)
}

// SyncBuffer is a bytes buffer safe for concurrent writers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
