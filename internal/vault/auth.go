package vault

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Method logs in to Vault and returns the token as an auth secret.
type Method interface {
	// Login returns a fresh token. It is called at start, when the token
	// can no longer be renewed, and after Vault refuses it.
	Login(ctx context.Context, c *api.Client) (*api.SecretAuth, error)
	// Name names the method in logs and metrics.
	Name() string
}

// Fingerprinter is a Method whose credential lives in a file that may be
// replaced underneath it; a changed fingerprint means log in again.
type Fingerprinter interface {
	Fingerprint() (string, error)
}

// readSecretFile reads a credential file, trimmed, refusing an empty one
// with a message that names the file but not its content.
func readSecretFile(what, path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%s file is not set", what)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s file: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s file %q is empty", what, path)
	}
	return v, nil
}

// TokenFile uses a token that something else (an operator, Vault Agent)
// writes to a file. Login reads the file and looks the token up, so its
// lifetime is known.
type TokenFile struct{ Path string }

func (m TokenFile) Name() string { return "token" }

// Borrowed reports that the token belongs to whoever writes the file: the
// session never revokes it.
func (m TokenFile) Borrowed() bool { return true }

func (m TokenFile) Fingerprint() (string, error) {
	b, err := os.ReadFile(m.Path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func (m TokenFile) Login(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
	tok, err := readSecretFile("token", m.Path)
	if err != nil {
		return nil, err
	}
	lc, err := c.CloneWithHeaders()
	if err != nil {
		return nil, fmt.Errorf("clone vault client: %w", err)
	}
	lc.SetToken(tok)
	s, err := lc.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, Wrap(fmt.Sprintf("look up the token from file %q", m.Path), err)
	}
	ttl, err := s.TokenTTL()
	if err != nil {
		return nil, fmt.Errorf("token ttl: %w", err)
	}
	renewable, _ := s.TokenIsRenewable()
	return &api.SecretAuth{ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}, nil
}

// AppRole logs in with a role ID and a secret ID read from files.
type AppRole struct {
	Mount, RoleIDFile, SecretIDFile string
}

func (m AppRole) Name() string { return "approle" }

func (m AppRole) Login(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
	roleID, err := readSecretFile("approle role-id", m.RoleIDFile)
	if err != nil {
		return nil, err
	}
	secretID, err := readSecretFile("approle secret-id", m.SecretIDFile)
	if err != nil {
		return nil, err
	}
	return login(ctx, c, orDefault(m.Mount, "approle"), map[string]any{"role_id": roleID, "secret_id": secretID})
}

// Cert logs in with the TLS client certificate the client was built with.
type Cert struct{ Mount, Role string }

func (m Cert) Name() string { return "cert" }

func (m Cert) Login(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
	body := map[string]any{}
	if m.Role != "" {
		body["name"] = m.Role
	}
	return login(ctx, c, orDefault(m.Mount, "cert"), body)
}

// JWT logs in with a JSON Web Token. It serves both the jwt and the
// kubernetes auth methods, which take the same request.
type JWT struct {
	Method string // "jwt" or "kubernetes"
	Mount  string
	Role   string
	// Token returns the JWT to present; it is called on every login so a
	// rotated token file or a fresh TokenRequest is always used.
	Token func(ctx context.Context) (string, error)
}

func (m JWT) Name() string { return m.Method }

func (m JWT) Login(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
	if m.Role == "" {
		return nil, fmt.Errorf("%s auth needs a role: set --auth-role", m.Method)
	}
	jwt, err := m.Token(ctx)
	if err != nil {
		return nil, err
	}
	return login(ctx, c, orDefault(m.Mount, m.Method), map[string]any{"role": m.Role, "jwt": jwt})
}

// JWTFile returns a token source reading path on every call.
func JWTFile(path string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return readSecretFile("jwt", path) }
}

// DefaultServiceAccountTokenFile is where Kubernetes mounts a pod's token.
const DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

func login(ctx context.Context, c *api.Client, mount string, body map[string]any) (*api.SecretAuth, error) {
	lc, err := c.CloneWithHeaders()
	if err != nil {
		return nil, fmt.Errorf("clone vault client: %w", err)
	}
	lc.ClearToken()
	path := "auth/" + strings.Trim(mount, "/") + "/login"
	s, err := lc.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return nil, Wrap("log in at "+path, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("log in at %s: vault returned no token", path)
	}
	return s.Auth, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
