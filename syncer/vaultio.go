package syncer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

var errNotFound = errors.New("no secret at this path")

// vaultIO is every Vault call made for a VaultSecret: log in as its
// tenant, read or issue, renew, revoke. Each call is bounded by the
// request timeout and counted.
type vaultIO struct {
	Tenants *Tenants
	// Auths logs in for VaultSecrets naming a VaultAuth (spec.authRef).
	Auths *sharedAuths
	// APIReader reads AppRole credentials from the tenant's Secret.
	APIReader client.Reader
	Timeout   time.Duration
	Metrics   *Metrics
	Log       logr.Logger
}

func (v *vaultIO) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if v.Timeout <= 0 {
		return context.WithTimeout(ctx, 10*time.Second)
	}
	return context.WithTimeout(ctx, v.Timeout)
}

// count records one Vault request: its operation (read, renew, revoke),
// result and latency.
func (v *vaultIO) count(op string, start time.Time, err error) {
	if v.Metrics == nil {
		return
	}
	v.Metrics.vault.WithLabelValues(op, resultOf(err)).Observe(time.Since(start).Seconds())
}

// countLease records a lease operation (issue, renew, reissue, revoke) by
// result; a failed revoke is what leaves credentials alive longer than
// their holder.
func (v *vaultIO) countLease(op string, err error) {
	if v.Metrics != nil {
		v.Metrics.leases.WithLabelValues(op, resultOf(err)).Inc()
	}
}

// tenant returns the VaultSecret's tenant session, logging in if needed.
func (v *vaultIO) tenant(ctx context.Context, vs *v1alpha1.VaultSecret) (*TenantToken, error) {
	if vs.Spec.AuthRef != nil {
		return v.Auths.forSecret(ctx, vs)
	}
	if k := vs.Spec.Auth.Kubernetes; k != nil {
		return v.Tenants.Client(ctx, tenantKeyFor(vs), k.Audiences)
	}
	return v.appRoleClient(ctx, vs)
}

// cachedToken is the tenant's token if the controller holds one, without
// logging in.
func (v *vaultIO) cachedToken(vs *v1alpha1.VaultSecret) *TenantToken {
	if v.Tenants == nil {
		return nil
	}
	if vs.Spec.AuthRef != nil {
		return v.Auths.cached(vs)
	}
	return v.Tenants.Cached(tenantKeyFor(vs))
}

// fetch reads the source (issues credentials for dynamic and pki).
func (v *vaultIO) fetch(ctx context.Context, vs *v1alpha1.VaultSecret, src *v1alpha1.Source, kind sourceKind, tok *TenantToken) (fetched, error) {
	vctx, cancel := v.ctx(ctx)
	defer cancel()
	start := time.Now()
	f, err := kind.fetch(vctx, tok.Client, vs, src)
	v.count("read", start, err)
	if (err == nil && f.leaseID != "") || (err != nil && kind.leased()) {
		v.countLease("issue", err)
	}
	return f, err
}

// renew extends a lease by increment.
func (v *vaultIO) renew(ctx context.Context, tok *TenantToken, id string, increment time.Duration) (time.Duration, error) {
	vctx, cancel := v.ctx(ctx)
	defer cancel()
	start := time.Now()
	granted, err := renewLease(vctx, tok.Client, id, increment)
	v.count("renew", start, err)
	v.countLease("renew", err)
	return granted, err
}

// release revokes a lease under the tenant's identity. A lease is revoked
// the same way whatever the source is now: a VaultSecret switched from
// dynamic to kv still revokes the lease it held.
func (v *vaultIO) release(ctx context.Context, vs *v1alpha1.VaultSecret, l leaseRef) error {
	tok, err := v.tenant(ctx, vs)
	if err != nil {
		return err
	}
	return v.releaseRef(ctx, tok, l)
}

// releaseRef revokes l with tok, provided tok belongs to the Vault that
// issued it: a lease id is never sent to another Vault, which would not
// know it (and would answer a revocation of an unknown lease with
// success, so the lease would be called revoked while it lives on).
func (v *vaultIO) releaseRef(ctx context.Context, tok *TenantToken, l leaseRef) error {
	if elsewhere(l.Vault, tok.Vault) {
		return &issuedElsewhereError{issuedBy: l.Vault, now: tok.Vault}
	}
	return v.releaseWith(ctx, tok, l.ID)
}

// elsewhere tells whether a lease of Vault issuedBy must not be sent with
// a token of Vault now. Either unknown (a lease recorded before leases
// named their Vault, a Vault that did not say) keeps the old behaviour.
func elsewhere(issuedBy, now string) bool {
	return issuedBy != "" && now != "" && issuedBy != now
}

// issuedElsewhereError: a lease of a Vault the VaultSecret's connection no
// longer reaches (its address, or the flags' --vault-addr, changed).
type issuedElsewhereError struct{ issuedBy, now string }

func (e *issuedElsewhereError) Error() string {
	return fmt.Sprintf("the lease was issued by Vault cluster %q, and the connection now reaches cluster %q (its address changed); the lease is not sent there and ends on its own at its TTL", e.issuedBy, e.now)
}

func (v *vaultIO) releaseWith(ctx context.Context, tok *TenantToken, id string) error {
	vctx, cancel := v.ctx(ctx)
	defer cancel()
	start := time.Now()
	err := revokeLease(vctx, tok.Client, id)
	v.count("revoke", start, err)
	v.countLease("revoke", err)
	return err
}

// releaseUnused revokes a lease no Secret ever held; failure is logged,
// since the lease then ends on its own.
func (v *vaultIO) releaseUnused(ctx context.Context, tok *TenantToken, id string) {
	if err := v.releaseWith(ctx, tok, id); err != nil {
		v.Log.Info("revoking an unused lease failed; it ends on its own", "error", explain(err))
	}
}

// refused tells the tenant cache that Vault refused a request: a refused
// path is not a dead token, and Tenants decides whether the token is.
func (v *vaultIO) refused(vs *v1alpha1.VaultSecret) {
	if vs.Spec.AuthRef != nil {
		v.Auths.refused(vs)
		return
	}
	v.Tenants.Refused(tenantKeyFor(vs))
}

func tenantKeyFor(vs *v1alpha1.VaultSecret) tenantKey {
	if a := vs.Spec.Auth.AppRole; a != nil {
		return tenantKey{Namespace: vs.Namespace, Role: "approle-secret:" + a.SecretRef, Mount: orDefault(a.Mount, "approle")}
	}
	k := vs.Spec.Auth.Kubernetes
	if k == nil {
		return tenantKey{Namespace: vs.Namespace}
	}
	return tenantKey{Namespace: vs.Namespace, ServiceAccount: k.ServiceAccountName, Role: k.Role, Mount: orDefault(k.Mount, "kubernetes")}
}

// appRoleClient logs in with the role and secret IDs in the tenant's own
// Secret; its tokens are cached per (namespace, Secret, mount) like service
// account tokens.
func (v *vaultIO) appRoleClient(ctx context.Context, vs *v1alpha1.VaultSecret) (*TenantToken, error) {
	return v.Tenants.ClientFor(ctx, tenantKeyFor(vs), func(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
		a := vs.Spec.Auth.AppRole
		var s corev1.Secret
		if err := v.APIReader.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: a.SecretRef}, &s); err != nil {
			return nil, fmt.Errorf("spec.auth.appRole.secretRef %q: %w", a.SecretRef, err)
		}
		roleKey, secretKey := orDefault(a.RoleIDKey, "role-id"), orDefault(a.SecretIDKey, "secret-id")
		if len(s.Data[roleKey]) == 0 || len(s.Data[secretKey]) == 0 {
			return nil, fmt.Errorf("spec.auth.appRole: Secret %q needs keys %q and %q", a.SecretRef, roleKey, secretKey)
		}
		sec, err := c.Logical().WriteWithContext(ctx, "auth/"+orDefault(a.Mount, "approle")+"/login", map[string]any{"role_id": string(s.Data[roleKey]), "secret_id": string(s.Data[secretKey])})
		if err != nil {
			return nil, &loginError{msg: fmt.Sprintf("vault approle login with Secret %s/%s: %s", vs.Namespace, a.SecretRef, vault.Describe(err)), err: err}
		}
		if sec == nil || sec.Auth == nil {
			return nil, fmt.Errorf("vault approle login with Secret %s/%s: no token in the answer", vs.Namespace, a.SecretRef)
		}
		return sec.Auth, nil
	})
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// explain renders an error for conditions, events and logs without
// secrets: a login error keeps the identity it names.
func explain(err error) string {
	var le *loginError
	if errors.As(err, &le) {
		return le.msg
	}
	var rd *renewDeniedError
	if errors.As(err, &rd) {
		return rd.Error()
	}
	return vault.Describe(err)
}
