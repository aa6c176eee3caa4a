package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// Vault is a real Vault server with file storage behind TLS, initialised
// with a single unseal key, so it can be stopped, started again, sealed and
// unsealed without losing its keys.
type Vault struct {
	Addr      string
	CA        *CA
	RootToken string
	UnsealKey string
	Dir       string

	env     Env
	bin     string
	proc    *process
	port    int
	logPath string
}

// StartVault starts, initialises and unseals a Vault server. It is stopped
// when env cleans up.
func StartVault(env Env) *Vault {
	env.Helper()
	return StartVaultWith(env, VaultOptions{})
}

// VaultOptions configures StartVaultWith.
type VaultOptions struct {
	// ReachableAt are further addresses of this host the server is
	// reached at, such as a test node's bridge gateway for pods: the
	// server then listens on every address and its certificate covers
	// these too. Addr stays on 127.0.0.1.
	ReachableAt []net.IP
}

// StartVaultWith is StartVault with options.
func StartVaultWith(env Env, opts VaultOptions) *Vault {
	env.Helper()
	v := &Vault{env: env, bin: Binary(env, "vault"), Dir: env.TempDir()}
	port, err := FreePort()
	if err != nil {
		env.Fatalf("free port: %v", err)
	}
	v.port = port
	v.Addr = fmt.Sprintf("https://127.0.0.1:%d", port)
	if v.CA, err = NewCA(v.Dir, "vault"); err != nil {
		env.Fatalf("vault CA: %v", err)
	}
	crt, key, err := v.CA.IssueServer(v.Dir, "vault-server", opts.ReachableAt...)
	if err != nil {
		env.Fatalf("vault server cert: %v", err)
	}
	listen := "127.0.0.1"
	if len(opts.ReachableAt) > 0 {
		listen = "0.0.0.0"
	}
	cfg := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address       = "%s:%d"
  tls_cert_file = %q
  tls_key_file  = %q
}
disable_mlock = true
api_addr      = %q
log_level     = "warn"
`, filepath.Join(v.Dir, "data"), listen, port, crt, key, v.Addr)
	if err := os.WriteFile(filepath.Join(v.Dir, "vault.hcl"), []byte(cfg), 0o600); err != nil {
		env.Fatalf("vault config: %v", err)
	}
	v.logPath = filepath.Join(v.Dir, "vault.log")
	env.Cleanup(v.Stop)
	v.Start()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := v.client("")
	init, err := c.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		env.Fatalf("vault init: %v", err)
	}
	v.RootToken, v.UnsealKey = init.RootToken, init.KeysB64[0]
	v.Unseal()
	// Match the dev server's layout: KV v2 at secret/.
	if err := v.Client().Sys().MountWithContext(ctx, "secret", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		env.Fatalf("mount kv: %v", err)
	}
	return v
}

// Start starts the server process (again) and waits until it answers; a
// restarted server is sealed until Unseal.
func (v *Vault) Start() {
	v.env.Helper()
	proc, err := startProcess(v.bin, []string{"server", "-config=" + filepath.Join(v.Dir, "vault.hcl")}, v.logPath)
	if err != nil {
		v.env.Fatalf("%v", err)
	}
	v.proc = proc
	c := v.client("")
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Sys().SealStatusWithContext(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			v.env.Fatalf("vault did not answer within 30s: %v\n%s", err, v.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server; its storage stays.
func (v *Vault) Stop() {
	v.proc.stop(10 * time.Second)
	v.proc = nil
}

// Restart stops the server, starts it again and unseals it.
func (v *Vault) Restart() {
	v.env.Helper()
	v.Stop()
	v.Start()
	v.Unseal()
}

// Unseal unseals the server and waits until it is active.
func (v *Vault) Unseal() {
	v.env.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := v.client("")
	if _, err := c.Sys().UnsealWithContext(ctx, v.UnsealKey); err != nil {
		v.env.Fatalf("vault unseal: %v", err)
	}
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			return
		}
		if ctx.Err() != nil {
			v.env.Fatalf("vault not active after unseal: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Seal seals the server.
func (v *Vault) Seal() {
	v.env.Helper()
	if err := v.Client().Sys().Seal(); err != nil {
		v.env.Fatalf("vault seal: %v", err)
	}
}

// Client returns a client with the root token.
func (v *Vault) Client() *api.Client { return v.client(v.RootToken) }

func (v *Vault) client(token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CA.CertFile}); err != nil {
		v.env.Fatalf("vault client TLS: %v", err)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		v.env.Fatalf("vault client: %v", err)
	}
	c.SetToken(token)
	return c
}

// Write writes data at path with the root token.
func (v *Vault) Write(path string, data map[string]any) *api.Secret {
	v.env.Helper()
	s, err := v.Client().Logical().Write(path, data)
	if err != nil {
		v.env.Fatalf("vault write %s: %v", path, err)
	}
	return s
}

// Read reads path with the root token.
func (v *Vault) Read(path string) *api.Secret {
	v.env.Helper()
	s, err := v.Client().Logical().Read(path)
	if err != nil {
		v.env.Fatalf("vault read %s: %v", path, err)
	}
	return s
}

// Enable mounts a secrets engine of kind at path.
func (v *Vault) Enable(path, kind string) {
	v.env.Helper()
	if err := v.Client().Sys().Mount(path, &api.MountInput{Type: kind}); err != nil {
		v.env.Fatalf("mount %s at %s: %v", kind, path, err)
	}
}

// EnableAuth enables an auth method of kind at path.
func (v *Vault) EnableAuth(path, kind string) {
	v.env.Helper()
	if err := v.Client().Sys().EnableAuthWithOptions(path, &api.EnableAuthOptions{Type: kind}); err != nil {
		v.env.Fatalf("enable auth %s at %s: %v", kind, path, err)
	}
}

// Policy writes a policy.
func (v *Vault) Policy(name, hcl string) {
	v.env.Helper()
	if err := v.Client().Sys().PutPolicy(name, hcl); err != nil {
		v.env.Fatalf("put policy %s: %v", name, err)
	}
}

// TransitKey mounts Transit at mount (once) and creates key.
func (v *Vault) TransitKey(mount, key string) {
	v.env.Helper()
	mounts, err := v.Client().Sys().ListMounts()
	if err != nil {
		v.env.Fatalf("list mounts: %v", err)
	}
	if _, ok := mounts[strings.Trim(mount, "/")+"/"]; !ok {
		v.Enable(mount, "transit")
	}
	v.Write(mount+"/keys/"+key, map[string]any{"type": "aes256-gcm96"})
}

// Pause stops the server process with SIGSTOP: connections stay open and
// nothing answers, like a Vault that hangs. Resume continues it.
func (v *Vault) Pause()  { v.proc.cmd.Process.Signal(syscall.SIGSTOP) }
func (v *Vault) Resume() { v.proc.cmd.Process.Signal(syscall.SIGCONT) }

// EnableFileAudit enables a file audit device and returns the log's path.
// Every request and response is one JSON line; tests count Vault's own
// record of requests with AuditCount.
func (v *Vault) EnableFileAudit() string {
	v.env.Helper()
	p := filepath.Join(v.Dir, "audit.log")
	if err := v.Client().Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{Type: "file", Options: map[string]string{"file_path": p}}); err != nil {
		v.env.Fatalf("enable file audit: %v", err)
	}
	return p
}

// AuditCount counts the successful responses in audit log p to requests
// for path (such as "auth/approle/login").
func AuditCount(env Env, p, path string) int {
	env.Helper()
	return auditCount(env, p, path, false)
}

// AuditCountAll counts every response in audit log p to requests for
// path, refused ones included.
func AuditCountAll(env Env, p, path string) int {
	env.Helper()
	return auditCount(env, p, path, true)
}

func auditCount(env Env, p, path string, refused bool) int {
	env.Helper()
	f, err := os.Open(p)
	if err != nil {
		env.Fatalf("open audit log: %v", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if e, ok := ParseAuditResponse(sc.Bytes()); ok && e.Path == path && (refused || e.Error == "") {
			n++
		}
	}
	return n
}

// AuditResponse is what the tests and the bench read of one response
// entry in a Vault file audit log.
type AuditResponse struct {
	Path, Error string
}

// ParseAuditResponse reads one line of a file audit log; ok is false for
// request entries and for lines that are not JSON.
func ParseAuditResponse(line []byte) (r AuditResponse, ok bool) {
	var e struct {
		Type    string `json:"type"`
		Error   string `json:"error"`
		Request struct {
			Path string `json:"path"`
		} `json:"request"`
	}
	if json.Unmarshal(line, &e) != nil || e.Type != "response" {
		return AuditResponse{}, false
	}
	return AuditResponse{Path: e.Request.Path, Error: e.Error}, true
}

// ServeCert replaces the server's TLS certificate with one from a new CA,
// restarts and unseals the server, and returns the new CA: clients that
// trust only the old CA can no longer connect.
func (v *Vault) ServeCert() *CA {
	v.env.Helper()
	dir := v.env.TempDir()
	ca, err := NewCA(dir, "vault2")
	if err != nil {
		v.env.Fatalf("new CA: %v", err)
	}
	crt, key, err := ca.Issue(dir, "vault-server", true)
	if err != nil {
		v.env.Fatalf("issue: %v", err)
	}
	cfgPath := filepath.Join(v.Dir, "vault.hcl")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		v.env.Fatalf("%v", err)
	}
	cfg := regexp.MustCompile(`tls_cert_file = ".*"`).ReplaceAllString(string(b), fmt.Sprintf("tls_cert_file = %q", crt))
	cfg = regexp.MustCompile(`tls_key_file  = ".*"`).ReplaceAllString(cfg, fmt.Sprintf("tls_key_file  = %q", key))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		v.env.Fatalf("%v", err)
	}
	v.CA = ca
	v.Restart()
	return ca
}

// Log returns the server's log.
func (v *Vault) Log() string {
	b, _ := os.ReadFile(v.logPath)
	return string(b)
}

// TokenFile writes a token to a 0600 file and returns its path.
func TokenFile(env Env, token string) string {
	env.Helper()
	p := filepath.Join(env.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		env.Fatalf("write token file: %v", err)
	}
	return p
}

// PluginPolicy is the least a plugin needs: read its key, encrypt and
// decrypt with it.
func PluginPolicy(mount, key string) string {
	return fmt.Sprintf(`path "%[1]s/keys/%[2]s" { capabilities = ["read"] }
path "%[1]s/encrypt/%[2]s" { capabilities = ["update"] }
path "%[1]s/decrypt/%[2]s" { capabilities = ["update"] }
`, mount, key)
}
