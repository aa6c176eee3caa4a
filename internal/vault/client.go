// Package vault is the one Vault client layer that the KMS plugin and the
// controller share: building a client, logging in with each supported auth
// method, keeping the token alive, and describing Vault errors without
// leaking anything secret.
package vault

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/vault/api"
)

// Config describes how to reach Vault. It is the whole configuration: no
// VAULT_* environment variable changes what the client does (the api
// package's DefaultConfig reads VAULT_SKIP_VERIFY, VAULT_AGENT_ADDR,
// VAULT_CACERT, proxy variables and more; none of them is used here).
type Config struct {
	// Address of Vault, such as https://vault.example:8200. Several
	// addresses may be given separated by commas; they are tried in order
	// and the client moves to the next when one cannot be reached. Plain
	// http:// is accepted only for a loopback address (a local Vault Agent
	// listener or a dev server).
	Address string
	// CACert is a PEM file with the CA that signed Vault's serving
	// certificate; empty means the system's roots. Re-read when it changes.
	CACert string
	// Namespace is the Vault Enterprise namespace; empty means root.
	Namespace string
	// Timeout bounds every request that carries no earlier deadline.
	Timeout time.Duration
	// ClientCert and ClientKey are presented to Vault's TLS listener; the
	// cert auth method needs them. Re-read when they change.
	ClientCert, ClientKey string
	// FileCheckInterval is how often, at most, the CA and client
	// certificate files are checked for changes. Default 2s.
	FileCheckInterval time.Duration
}

// vaultRequestHeader is the api package's SSRF protection header; it is
// the only header a client starts with.
const vaultRequestHeader = "X-Vault-Request"

// NewClient builds a Vault API client without a token. Retries are left to
// the callers, who know which of their requests are idempotent.
func NewClient(cfg Config) (*api.Client, error) {
	addrs, err := ParseAddresses(cfg.Address)
	if err != nil {
		return nil, err
	}
	if cfg.CACert != "" {
		if _, err := os.Stat(cfg.CACert); err != nil {
			return nil, fmt.Errorf("--vault-ca-cert: %w", err)
		}
	}
	rt, err := newTransport(addrs, tlsFiles{CA: cfg.CACert, Cert: cfg.ClientCert, Key: cfg.ClientKey}, cfg.FileCheckInterval)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{
		Transport: rt,
		Timeout:   cfg.Timeout,
		// The transport follows a redirect itself, only to another
		// --vault-addr (see transport.RoundTrip); net/http never does.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c := &api.Config{
		Address:    addrs[0].String(),
		HttpClient: hc,
		MaxRetries: 0,
		// The transport answers every 3xx itself; this only says so.
		DisableRedirects: true,
		// Timeout goes on the HTTP client only: the api package turns
		// Config.Timeout into a context it cancels as soon as a raw
		// request returns, before the caller has read the body.
		Timeout:      0,
		MinRetryWait: time.Millisecond,
		MaxRetryWait: time.Millisecond,
	}
	client, err := api.NewClient(c)
	if err != nil {
		// api.NewClient parses the VAULT_* environment even though none of
		// it is used; a malformed variable still makes it fail.
		return nil, fmt.Errorf("create vault client (unset malformed VAULT_* environment variables; vaultkms does not use them): %w", err)
	}
	// NewClient copies VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS from
	// the environment; undo all three.
	client.ClearToken()
	client.SetHeaders(http.Header{vaultRequestHeader: []string{"true"}})
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	client.SetCloneHeaders(true)
	return client, nil
}

// Failovers counts how often a client made by NewClient moved to another
// of its --vault-addr addresses because the one in use could not be
// reached; 0 for any other client.
func Failovers(c *api.Client) uint64 {
	if t, ok := c.CloneConfig().HttpClient.Transport.(*transport); ok {
		return t.failovers.Load()
	}
	return 0
}
