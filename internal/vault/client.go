// Package vault is the one Vault client layer that the KMS plugin and the
// controller share: building a client, logging in with each supported auth
// method, keeping the token alive, and describing Vault errors without
// leaking anything secret.
package vault

import (
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/vault/api"
)

// Config describes how to reach Vault.
type Config struct {
	// Address of Vault, such as https://vault.example:8200.
	Address string
	// CACert is a PEM file with the CA that signed Vault's serving certificate.
	CACert string
	// Namespace is the Vault Enterprise namespace; empty means root.
	Namespace string
	// Timeout bounds every request that carries no earlier deadline.
	Timeout time.Duration
	// ClientCert and ClientKey are presented to Vault's TLS listener; the
	// cert auth method needs them.
	ClientCert, ClientKey string
}

// NewClient builds a Vault API client without a token. Retries are left to
// the callers, who know which of their requests are idempotent.
func NewClient(cfg Config) (*api.Client, error) {
	if cfg.Address == "" {
		return nil, fmt.Errorf("vault address is empty: set --vault-addr or VAULT_ADDR")
	}
	c := api.DefaultConfig()
	if c.Error != nil {
		return nil, fmt.Errorf("vault default config: %w", c.Error)
	}
	c.Address = cfg.Address
	c.MaxRetries = 0
	// The timeout goes on the HTTP client only. The api package also turns
	// Config.Timeout into a context it cancels as soon as a raw request
	// returns, before the caller has read the body.
	c.Timeout = 0
	if cfg.Timeout > 0 {
		c.HttpClient.Timeout = cfg.Timeout
	}
	tls := &api.TLSConfig{CACert: cfg.CACert, ClientCert: cfg.ClientCert, ClientKey: cfg.ClientKey}
	if cfg.CACert != "" {
		if _, err := os.Stat(cfg.CACert); err != nil {
			return nil, fmt.Errorf("vault CA certificate: %w", err)
		}
	}
	if err := c.ConfigureTLS(tls); err != nil {
		return nil, fmt.Errorf("configure TLS for vault: %w", err)
	}
	client, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("create vault client: %w", err)
	}
	// The client reads VAULT_TOKEN from the environment; a token must come
	// only from the configured auth method.
	client.ClearToken()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	return client, nil
}
