package syncer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// tenantKey identifies one tenant identity: a service account in a
// namespace logging in to a Vault role at an auth mount.
type tenantKey struct {
	Namespace, ServiceAccount, Role, Mount string
}

type tenantToken struct {
	client    *api.Client
	expires   time.Time
	ttl       time.Duration
	renewable bool
}

// Tenants logs in to Vault as each tenant's own service account and caches
// the tokens, so one login serves every VaultSecret of that identity.
// The controller's own identity never reaches Vault.
type Tenants struct {
	Base  *api.Client // no token; cloned per tenant
	Kube  kubernetes.Interface
	Clock clock.PassiveClock
	// TokenSeconds is the lifetime asked for service account tokens.
	TokenSeconds int64
	// Logins counts Vault logins, for metrics.
	Logins func(result string)

	mu     sync.Mutex
	tokens map[tenantKey]*tenantToken
}

// LoginFunc logs a fresh client in and returns the auth secret.
type LoginFunc func(ctx context.Context, c *api.Client) (*api.SecretAuth, error)

// Client returns a Vault client logged in as the tenant's service account.
func (t *Tenants) Client(ctx context.Context, k tenantKey, audiences []string) (*api.Client, error) {
	return t.ClientFor(ctx, k, func(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
		return t.serviceAccountLogin(ctx, c, k, audiences)
	})
}

// ClientFor returns a cached client for k, logging in with login when there
// is none or its token can no longer be renewed.
func (t *Tenants) ClientFor(ctx context.Context, k tenantKey, login LoginFunc) (*api.Client, error) {
	t.mu.Lock()
	tok := t.tokens[k]
	t.mu.Unlock()
	now := t.Clock.Now()
	// Reuse a token with at least a third of its life left; renew one
	// past that while Vault allows, and log in again only when it does not.
	if tok != nil && (tok.expires.IsZero() || now.Before(tok.expires.Add(-tok.ttl/3))) {
		return tok.client, nil
	}
	if tok != nil && tok.renewable && now.Before(tok.expires) {
		if s, err := tok.client.Auth().Token().RenewSelfWithContext(ctx, int(tok.ttl.Seconds())); err == nil && s != nil && s.Auth != nil {
			granted := time.Duration(s.Auth.LeaseDuration) * time.Second
			if !RenewalCutShort(tok.ttl, granted) {
				t.mu.Lock()
				tok.expires = now.Add(granted)
				t.mu.Unlock()
				if t.Logins != nil {
					t.Logins("renewed")
				}
				return tok.client, nil
			}
		}
	}
	c, err := t.login(ctx, k, login)
	if t.Logins != nil {
		if err != nil {
			t.Logins("error")
		} else {
			t.Logins("ok")
		}
	}
	return c, err
}

// Forget drops a tenant's token, after Vault refused it.
func (t *Tenants) Forget(k tenantKey) {
	t.mu.Lock()
	delete(t.tokens, k)
	t.mu.Unlock()
}

func (t *Tenants) serviceAccountLogin(ctx context.Context, c *api.Client, k tenantKey, audiences []string) (*api.SecretAuth, error) {
	secs := t.TokenSeconds
	if secs == 0 {
		secs = 600
	}
	tr, err := t.Kube.CoreV1().ServiceAccounts(k.Namespace).CreateToken(ctx, k.ServiceAccount, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request a token for service account %s/%s: %w", k.Namespace, k.ServiceAccount, err)
	}
	m := vault.JWT{Method: "kubernetes", Mount: k.Mount, Role: k.Role, Token: func(context.Context) (string, error) { return tr.Status.Token, nil }}
	auth, err := m.Login(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("vault login as %s/%s with role %q: %w", k.Namespace, k.ServiceAccount, k.Role, err)
	}
	return auth, nil
}

func (t *Tenants) login(ctx context.Context, k tenantKey, login LoginFunc) (*api.Client, error) {
	c, err := t.Base.CloneWithHeaders()
	if err != nil {
		return nil, err
	}
	auth, err := login(ctx, c)
	if err != nil {
		return nil, err
	}
	c.SetToken(auth.ClientToken)
	tok := &tenantToken{client: c, ttl: time.Duration(auth.LeaseDuration) * time.Second, renewable: auth.Renewable}
	if tok.ttl > 0 {
		tok.expires = t.Clock.Now().Add(tok.ttl)
	}
	t.mu.Lock()
	if t.tokens == nil {
		t.tokens = map[tenantKey]*tenantToken{}
	}
	t.tokens[k] = tok
	t.mu.Unlock()
	return c, nil
}
