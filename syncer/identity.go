package syncer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// tenantKey identifies one tenant identity: a service account in a
// namespace logging in to a Vault role at an auth mount of one Vault.
// Connection is empty for the controller's own Vault (the keys of its
// tokens predate connections); for a ClusterVaultConnection it names the
// connection and its address, so a token is never sent to another Vault.
type tenantKey struct {
	Namespace, ServiceAccount, Role, Mount string
	Connection                             string
}

// TenantToken is a tenant's Vault session: a client holding its token, and
// what is known of the token. The accessor identifies the token in status
// without revealing it.
type TenantToken struct {
	Client   *api.Client
	Accessor string
	// Vault names the Vault the token belongs to, empty when unknown (see
	// vaultIdentity): leases it issues are recorded with it.
	Vault     string
	Expires   time.Time // zero: the token does not expire
	ttl       time.Duration
	renewable bool
	// suspect is set when Vault refused a request made with the token:
	// the next use checks the token itself before trusting it again.
	suspect atomic.Bool
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
	// Audiences are asked for service account tokens when a VaultSecret
	// names none; the Vault role's audience must match.
	Audiences []string
	// AllowedAudiences are the audiences a VaultSecret may name (default:
	// Audiences). No token is minted for any other.
	AllowedAudiences []string
	// Timeout bounds each login (TokenRequest and Vault).
	Timeout time.Duration
	// Logins counts Vault logins, for metrics.
	Logins func(result string)

	mu     sync.Mutex
	tokens map[tenantKey]*TenantToken
	// locks serialise logins per identity, so many VaultSecrets of one
	// tenant reconciled at once cause one login, not one each.
	locks map[tenantKey]*sync.Mutex
	// failures remembers a failed login for a moment, so the VaultSecrets
	// of a tenant queued behind it fail at once instead of each waiting
	// for its own deadline against an unreachable Vault.
	failures map[tenantKey]loginFailure
	// vaults holds the identity of the Vault each base client reaches
	// (see vaultIdentity), asked once per client, not once per login.
	vaults sync.Map // *api.Client -> string
}

type loginFailure struct {
	at  time.Time
	err error
}

// loginRetryAfter is how long a failed login is answered from memory.
const loginRetryAfter = 2 * time.Second

// LoginFunc logs a fresh client in and returns the auth secret.
type LoginFunc func(ctx context.Context, c *api.Client) (*api.SecretAuth, error)

// allowedAudiences is the allowlist in force.
func (t *Tenants) allowedAudiences() []string {
	if t == nil {
		return nil
	}
	if len(t.AllowedAudiences) > 0 {
		return t.AllowedAudiences
	}
	return t.Audiences
}

// CheckSpec refuses, before any Vault call or token request, a spec that
// would turn the controller against Vault's own endpoints or have it mint
// a token for an audience the administrator did not allow. The error names
// the field.
func (t *Tenants) CheckSpec(vs *v1alpha1.VaultSecret) error {
	if len(vs.Spec.Sources) == 0 {
		if err := checkVaultPaths(vs.Spec.Source); err != nil {
			return err
		}
	}
	for i, src := range vs.Spec.Sources {
		if err := checkSourcePath(fmt.Sprintf("spec.sources[%d]", i), src); err != nil {
			return err
		}
	}
	if k := vs.Spec.Auth.Kubernetes; k != nil {
		return checkAudiences(k.Audiences, t.allowedAudiences())
	}
	return nil
}

// Client returns a Vault session logged in as the tenant's service account.
// Audiences outside the allowlist are refused here too, whatever the
// caller checked, so no path mints such a token.
func (t *Tenants) Client(ctx context.Context, k tenantKey, audiences []string) (*TenantToken, error) {
	if err := checkAudiences(audiences, t.allowedAudiences()); err != nil {
		return nil, err
	}
	if len(audiences) == 0 {
		audiences = t.Audiences
	}
	return t.ClientFor(ctx, k, func(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
		return t.serviceAccountLogin(ctx, c, k, audiences)
	})
}

// Cached returns the tenant's current token without logging in, or nil.
func (t *Tenants) Cached(k tenantKey) *TenantToken {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tokens[k]
}

func (t *Tenants) lock(k tenantKey) func() {
	t.mu.Lock()
	if t.locks == nil {
		t.locks = map[tenantKey]*sync.Mutex{}
	}
	l := t.locks[k]
	if l == nil {
		l = &sync.Mutex{}
		t.locks[k] = l
	}
	t.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// ClientFor returns a cached session for k, logging in with login when there
// is none or its token can no longer be renewed.
func (t *Tenants) ClientFor(ctx context.Context, k tenantKey, login LoginFunc) (*TenantToken, error) {
	return t.ClientVia(ctx, k, nil, login)
}

// BaseFunc returns the tokenless client a login clones: the Vault the
// token will belong to.
type BaseFunc func(ctx context.Context) (*api.Client, error)

// ClientVia is ClientFor logging in to the Vault of base (Base when nil).
// base is called only when a login is due.
func (t *Tenants) ClientVia(ctx context.Context, k tenantKey, base BaseFunc, login LoginFunc) (*TenantToken, error) {
	unlock := t.lock(k)
	defer unlock()
	if t.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.Timeout)
		defer cancel()
	}
	t.mu.Lock()
	tok := t.tokens[k]
	t.mu.Unlock()
	if tok != nil && tok.suspect.Load() {
		var err error
		if tok, err = t.verify(ctx, k, tok); err != nil {
			return nil, err
		}
	}
	now := t.Clock.Now()
	// Reuse a token with at least a third of its life left; renew one
	// past that while Vault allows, and log in again only when it does not.
	if tok != nil && (tok.Expires.IsZero() || now.Before(tok.Expires.Add(-tok.ttl/3))) {
		return tok, nil
	}
	if tok != nil && tok.renewable && now.Before(tok.Expires) {
		// now is taken before the request, as at login.
		if s, err := tok.Client.Auth().Token().RenewSelfWithContext(ctx, int(tok.ttl.Seconds())); err == nil && s != nil && s.Auth != nil {
			granted := time.Duration(s.Auth.LeaseDuration) * time.Second
			if !RenewalCutShort(tok.ttl, granted) {
				renewed := &TenantToken{Client: tok.Client, Accessor: tok.Accessor, Vault: tok.Vault, Expires: now.Add(granted), ttl: tok.ttl, renewable: tok.renewable}
				t.mu.Lock()
				t.tokens[k] = renewed
				t.mu.Unlock()
				if t.Logins != nil {
					t.Logins("renewed")
				}
				return renewed, nil
			}
		}
	}
	t.mu.Lock()
	f, failedRecently := t.failures[k]
	t.mu.Unlock()
	if failedRecently && now.Sub(f.at) < loginRetryAfter {
		return nil, f.err
	}
	c, err := t.login(ctx, k, base, login)
	t.mu.Lock()
	if t.failures == nil {
		t.failures = map[tenantKey]loginFailure{}
	}
	if err != nil {
		t.failures[k] = loginFailure{at: t.Clock.Now(), err: err}
	} else {
		delete(t.failures, k)
	}
	t.mu.Unlock()
	if t.Logins != nil {
		if err != nil {
			t.Logins("error")
		} else {
			t.Logins("ok")
		}
	}
	return c, err
}

// Refused records that Vault refused a request made with the tenant's
// token. A refused path is not a dead token: one VaultSecret naming a path
// its policy does not grant must not log out every VaultSecret of the
// tenant. The token is checked (lookup-self) on its next use, and dropped
// only if that check is refused too.
func (t *Tenants) Refused(k tenantKey) {
	t.mu.Lock()
	tok := t.tokens[k]
	t.mu.Unlock()
	if tok != nil {
		tok.suspect.Store(true)
	}
}

// Forget drops a tenant's token.
func (t *Tenants) Forget(k tenantKey) {
	t.mu.Lock()
	delete(t.tokens, k)
	t.mu.Unlock()
}

// verify checks a suspect token with lookup-self. It returns the token
// when Vault still accepts it, nil when Vault refuses it (dropped: the
// caller logs in again), and the error when Vault could not answer.
func (t *Tenants) verify(ctx context.Context, k tenantKey, tok *TenantToken) (*TenantToken, error) {
	_, err := tok.Client.Auth().Token().LookupSelfWithContext(ctx)
	switch {
	case err == nil:
		tok.suspect.Store(false)
		return tok, nil
	case vault.Classify(err) == vault.KindDenied:
		t.mu.Lock()
		if t.tokens[k] == tok {
			delete(t.tokens, k)
		}
		t.mu.Unlock()
		return nil, nil
	}
	return nil, fmt.Errorf("check the tenant's Vault token: %s", vault.Describe(err))
}

// loginError keeps a sanitized message naming the identity while the
// cause stays reachable, so vault.Classify still tells an unreachable
// Vault from a refused login.
type loginError struct {
	msg string
	err error
}

func (e *loginError) Error() string { return e.msg }
func (e *loginError) Unwrap() error { return e.err }

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
		return nil, &loginError{msg: fmt.Sprintf("vault login as %s/%s with role %q: %s", k.Namespace, k.ServiceAccount, k.Role, vault.Describe(err)), err: err}
	}
	return auth, nil
}

func (t *Tenants) login(ctx context.Context, k tenantKey, base BaseFunc, login LoginFunc) (*TenantToken, error) {
	// The token's life counts from before the request, so its recorded
	// end is never later than the real one.
	start := t.Clock.Now()
	b := t.Base
	if base != nil {
		var err error
		if b, err = base(ctx); err != nil {
			return nil, err
		}
	}
	c, err := b.CloneWithHeaders()
	if err != nil {
		return nil, err
	}
	auth, err := login(ctx, c)
	if err != nil {
		return nil, err
	}
	c.SetToken(auth.ClientToken)
	tok := &TenantToken{Client: c, Accessor: auth.Accessor, Vault: t.vaultOf(ctx, b, c), ttl: time.Duration(auth.LeaseDuration) * time.Second, renewable: auth.Renewable}
	if tok.ttl > 0 {
		tok.Expires = start.Add(tok.ttl)
	}
	t.mu.Lock()
	if t.tokens == nil {
		t.tokens = map[tenantKey]*TenantToken{}
	}
	t.tokens[k] = tok
	t.mu.Unlock()
	return tok, nil
}

// vaultOf is the identity of the Vault that base (and c, its clone for a
// login) reaches: asked once per base client, which a connection's change
// of address or CA replaces. An identity Vault did not give is asked
// again at the next login.
func (t *Tenants) vaultOf(ctx context.Context, base, c *api.Client) string {
	if id, ok := t.vaults.Load(base); ok {
		return id.(string)
	}
	id := vaultIdentity(ctx, c)
	if id != "" {
		t.vaults.Store(base, id)
	}
	return id
}

// healthTimeout bounds the sys/health request behind a Vault's identity:
// a proxy that black-holes it must not hold a login for the whole Vault
// timeout.
const healthTimeout = 2 * time.Second

// vaultIdentity names the Vault a client reaches as leases record it (see
// v1alpha1.Lease.Vault): its cluster ID, which every node of one cluster
// shares whatever address reached it, and the Vault namespace, where
// leases live. Asked from sys/health (unauthenticated, root namespace
// only). Empty when Vault does not say in time: such a token's leases are
// then renewed and revoked as before the identity existed.
func vaultIdentity(ctx context.Context, c *api.Client) string {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	h, err := c.WithNamespace("").Sys().HealthWithContext(ctx)
	if err != nil || h == nil || h.ClusterID == "" {
		return ""
	}
	if ns := strings.Trim(c.Namespace(), "/"); ns != "" {
		return h.ClusterID + "/" + ns
	}
	return h.ClusterID
}
