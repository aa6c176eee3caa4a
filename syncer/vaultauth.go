package syncer

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/api"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

const (
	// ForceSyncAnnotation on a VaultSecret asks for a sync now: each new
	// value (or its removal) reads Vault once, as External Secrets' users
	// know it. The value itself means nothing.
	ForceSyncAnnotation = "secrets.vaultkms.io/force-sync"
	// ReasonAuthNotFound: spec.authRef names a VaultAuth that does not
	// exist (or no longer does). The Secret is kept until its own expiry.
	ReasonAuthNotFound = "AuthNotFound"
	// ReasonLoggedIn is a VaultAuth's Ready reason after a login Vault
	// accepted.
	ReasonLoggedIn = "LoggedIn"
	// authRefIndex indexes VaultSecrets by the VaultAuth they name.
	authRefIndex = "spec.authRef.name"
)

// authNotFoundError is a spec.authRef naming no VaultAuth.
type authNotFoundError struct{ namespace, name string }

func (e *authNotFoundError) Error() string {
	return fmt.Sprintf("spec.authRef.name: no VaultAuth %q in namespace %s; create it, or name an existing one", e.name, e.namespace)
}

// invalidReason is the Ready reason of a problem found without Vault.
func invalidReason(err error) string {
	var nf *authNotFoundError
	if errors.As(err, &nf) {
		return ReasonAuthNotFound
	}
	if r := connectionReason(err); r != "" {
		return r
	}
	return ReasonInvalid
}

// sharedAuths logs in as VaultAuths. Every VaultSecret naming one
// VaultAuth shares one cached token (one login, renewed), and the
// VaultAuth's status controller reads the same token, so reporting its
// state costs no login of its own.
type sharedAuths struct {
	Tenants *Tenants
	// Reader reads VaultAuths (the cache).
	Reader client.Reader
	// APIReader reads AppRole Secrets, which the cache does not hold.
	APIReader client.Reader
	// ControllerNamespace and ControllerServiceAccount are the
	// controller's own identity, which no VaultAuth may name.
	ControllerNamespace, ControllerServiceAccount string
	// logins is told of every login attempt, so the VaultAuth's status
	// follows logins made for its VaultSecrets; sends never block.
	logins chan event.GenericEvent
	// conns decides, from the cache, which Vault a VaultAuth may log in
	// to; pool holds one client per ClusterVaultConnection.
	conns *connectionResolver
	pool  *connectionPool
}

func newSharedAuths(t *Tenants, reader, apiReader client.Reader, ns, sa string) *sharedAuths {
	pool := &connectionPool{APIReader: apiReader}
	if t != nil {
		pool.Default, pool.Timeout = t.Base, t.Timeout
	}
	return &sharedAuths{Tenants: t, Reader: reader, APIReader: apiReader, ControllerNamespace: ns, ControllerServiceAccount: sa,
		logins: make(chan event.GenericEvent, 256), conns: &connectionResolver{Reader: reader}, pool: pool}
}

// vaultAuthKey is the token cache's key of a VaultAuth of the default
// connection. It holds a fingerprint of the spec, so an edited VaultAuth
// (another role, another service account) never uses the token of its
// earlier spec. VaultAuth names cannot hold ':', so the key never equals
// an inline identity's.
func vaultAuthKey(va *v1alpha1.VaultAuth) tenantKey {
	return tenantKey{Namespace: va.Namespace, Role: "vaultauth:" + va.Name, Mount: "spec:" + shortHash(va.Spec)}
}

// vaultAuthKeyAt is vaultAuthKey for the connection the VaultAuth
// resolved to: a token of one Vault is never used with another.
func vaultAuthKeyAt(va *v1alpha1.VaultAuth, conn *connection) tenantKey {
	k := vaultAuthKey(va)
	if conn != nil {
		k.Connection = conn.Key
	}
	return k
}

// vet is every check made before a VaultAuth's token is minted or any
// request is sent for it: its own spec (check), then its connection
// (exists, selects its namespace, usable). It reads the cache only.
func (s *sharedAuths) vet(ctx context.Context, va *v1alpha1.VaultAuth) (*connection, error) {
	if err := s.check(va); err != nil {
		return nil, err
	}
	return s.conns.resolve(ctx, va)
}

// resolve returns the VaultAuth a VaultSecret names, nil for an inline
// spec.auth; authNotFoundError when it does not exist.
func (s *sharedAuths) resolve(ctx context.Context, vs *v1alpha1.VaultSecret) (*v1alpha1.VaultAuth, error) {
	if vs.Spec.AuthRef == nil {
		return nil, nil
	}
	var va v1alpha1.VaultAuth
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: vs.Spec.AuthRef.Name}, &va); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &authNotFoundError{namespace: vs.Namespace, name: vs.Spec.AuthRef.Name}
		}
		return nil, err
	}
	return &va, nil
}

// check refuses, before any token is minted or sent to Vault, a
// VaultAuth naming an audience outside the administrator's allowlist or
// the controller's own service account. The error names the field.
func (s *sharedAuths) check(va *v1alpha1.VaultAuth) error {
	field, sa, audiences := "", "", []string(nil)
	switch {
	case va.Spec.Kubernetes != nil:
		field, sa, audiences = "spec.kubernetes", va.Spec.Kubernetes.ServiceAccountName, va.Spec.Kubernetes.Audiences
	case va.Spec.JWT != nil:
		field, sa, audiences = "spec.jwt", va.Spec.JWT.ServiceAccountName, va.Spec.JWT.Audiences
	case va.Spec.AppRole != nil:
		return nil
	default:
		return fmt.Errorf("VaultAuth %s: spec needs exactly one of kubernetes, appRole or jwt", va.Name)
	}
	if err := checkAudiencesAt(fmt.Sprintf("VaultAuth %s: %s.audiences", va.Name, field), audiences, s.Tenants.allowedAudiences()); err != nil {
		return err
	}
	if s.ControllerServiceAccount != "" && va.Namespace == s.ControllerNamespace && sa == s.ControllerServiceAccount {
		return fmt.Errorf("VaultAuth %s: %s.serviceAccountName: %q is the controller's own service account; use a service account of the application", va.Name, field, sa)
	}
	return nil
}

// client returns the VaultAuth's session, logging in only when no cached
// token serves (or can be renewed).
func (s *sharedAuths) client(ctx context.Context, va *v1alpha1.VaultAuth) (*TenantToken, error) {
	conn, err := s.vet(ctx, va)
	if err != nil {
		return nil, err
	}
	login := s.loginFunc(va)
	base := func(ctx context.Context) (*api.Client, error) { return s.pool.client(ctx, conn) }
	return s.Tenants.ClientVia(ctx, vaultAuthKeyAt(va, conn), base, func(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
		auth, err := login(ctx, c)
		s.loggedIn(va)
		return auth, err
	})
}

// loggedIn asks the status controller to look at the VaultAuth again.
func (s *sharedAuths) loggedIn(va *v1alpha1.VaultAuth) {
	ev := event.GenericEvent{Object: &v1alpha1.VaultAuth{ObjectMeta: metav1.ObjectMeta{Namespace: va.Namespace, Name: va.Name}}}
	select {
	case s.logins <- ev:
	default:
		// The status controller is behind; its periodic look catches up.
	}
}

// forSecret is the session of the VaultAuth a VaultSecret names.
func (s *sharedAuths) forSecret(ctx context.Context, vs *v1alpha1.VaultSecret) (*TenantToken, error) {
	va, err := s.resolve(ctx, vs)
	if err != nil {
		return nil, err
	}
	return s.client(ctx, va)
}

// key is the token cache's key for a VaultSecret naming a VaultAuth; ok is
// false when the VaultAuth cannot be read.
func (s *sharedAuths) key(vs *v1alpha1.VaultSecret) (tenantKey, bool) {
	// A cache read: no request leaves the process.
	ctx := context.Background()
	va, err := s.resolve(ctx, vs)
	if err != nil || va == nil {
		return tenantKey{}, false
	}
	conn, err := s.vet(ctx, va)
	if err != nil {
		return tenantKey{}, false
	}
	return vaultAuthKeyAt(va, conn), true
}

// cached is the token a VaultSecret's VaultAuth holds, without logging in.
func (s *sharedAuths) cached(vs *v1alpha1.VaultSecret) *TenantToken {
	if k, ok := s.key(vs); ok {
		return s.Tenants.Cached(k)
	}
	return nil
}

// refused tells the token cache that Vault refused a request made with
// the VaultAuth's token (see Tenants.Refused).
func (s *sharedAuths) refused(vs *v1alpha1.VaultSecret) {
	if k, ok := s.key(vs); ok {
		s.Tenants.Refused(k)
	}
}

// prune drops cached tokens of a VaultAuth other than those of keep (the
// key of its current spec; zero when it was deleted): an edited or
// deleted VaultAuth's old token is never used again.
func (s *sharedAuths) prune(namespace, name string, keep tenantKey) {
	t := s.Tenants
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.tokens {
		if k.Namespace == namespace && k.Role == "vaultauth:"+name && k != keep {
			delete(t.tokens, k)
		}
	}
}

// loginFunc logs in with the VaultAuth's method.
func (s *sharedAuths) loginFunc(va *v1alpha1.VaultAuth) LoginFunc {
	spec := va.Spec
	ns := va.Namespace
	return func(ctx context.Context, c *api.Client) (*api.SecretAuth, error) {
		switch {
		case spec.Kubernetes != nil:
			k := spec.Kubernetes
			return s.tokenLogin(ctx, c, "kubernetes", orDefault(k.Mount, "kubernetes"), k.Role, ns, k.ServiceAccountName, k.Audiences)
		case spec.JWT != nil:
			j := spec.JWT
			return s.tokenLogin(ctx, c, "jwt", orDefault(j.Mount, "jwt"), j.Role, ns, j.ServiceAccountName, j.Audiences)
		case spec.AppRole != nil:
			return s.appRoleLogin(ctx, c, va.Name, ns, spec.AppRole)
		}
		return nil, fmt.Errorf("VaultAuth %s: spec needs exactly one of kubernetes, appRole or jwt", va.Name)
	}
}

// tokenLogin requests a short-lived token of the service account for the
// audiences (the controller's default when none) and presents it at the
// kubernetes or jwt mount.
func (s *sharedAuths) tokenLogin(ctx context.Context, c *api.Client, method, mount, role, ns, sa string, audiences []string) (*api.SecretAuth, error) {
	t := s.Tenants
	if len(audiences) == 0 {
		audiences = t.Audiences
	}
	secs := t.TokenSeconds
	if secs == 0 {
		secs = 600
	}
	tr, err := t.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request a token for service account %s/%s: %w", ns, sa, err)
	}
	m := vault.JWT{Method: method, Mount: mount, Role: role, Token: func(context.Context) (string, error) { return tr.Status.Token, nil }}
	auth, err := m.Login(ctx, c)
	if err != nil {
		return nil, &loginError{msg: fmt.Sprintf("vault %s login at auth/%s as %s/%s with role %q: %s", method, mount, ns, sa, role, vault.Describe(err)), err: err}
	}
	return auth, nil
}

// appRoleLogin logs in with the role and secret IDs of the VaultAuth's
// Secret, read at each login so a rotated secret ID is used.
func (s *sharedAuths) appRoleLogin(ctx context.Context, c *api.Client, name, ns string, a *v1alpha1.AppRoleAuth) (*api.SecretAuth, error) {
	var sec corev1.Secret
	if err := s.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: a.SecretRef}, &sec); err != nil {
		return nil, fmt.Errorf("VaultAuth %s: spec.appRole.secretRef %q: %w", name, a.SecretRef, err)
	}
	roleKey, secretKey := orDefault(a.RoleIDKey, "role-id"), orDefault(a.SecretIDKey, "secret-id")
	if len(sec.Data[roleKey]) == 0 || len(sec.Data[secretKey]) == 0 {
		return nil, fmt.Errorf("VaultAuth %s: spec.appRole: Secret %q needs keys %q and %q", name, a.SecretRef, roleKey, secretKey)
	}
	mount := orDefault(a.Mount, "approle")
	res, err := c.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", map[string]any{"role_id": string(sec.Data[roleKey]), "secret_id": string(sec.Data[secretKey])})
	if err != nil {
		return nil, &loginError{msg: fmt.Sprintf("vault approle login at auth/%s with Secret %s/%s: %s", mount, ns, a.SecretRef, vault.Describe(err)), err: err}
	}
	if res == nil || res.Auth == nil {
		return nil, fmt.Errorf("vault approle login with Secret %s/%s: no token in the answer", ns, a.SecretRef)
	}
	return res.Auth, nil
}

// syncHash is the source hash Decide compares with status.sourceHash: the
// spec's, plus what else decides the data, the VaultAuth's spec (so an
// edited VaultAuth re-syncs its VaultSecrets) and the force-sync
// annotation (so a new value syncs once). A VaultSecret with neither
// keeps exactly its earlier hash: an upgrade re-syncs nothing.
func syncHash(vs *v1alpha1.VaultSecret, va *v1alpha1.VaultAuth) string {
	return syncHashAt(vs, va, "")
}

// syncHashAt is syncHash with the VaultAuth's connection: conn is the
// connection's key (its name and address), or why it cannot be used, and
// empty for the default connection. A connection moved to another Vault
// re-syncs its VaultSecrets from there; one that becomes usable again
// (allowedNamespaces now selecting the namespace) is a nudge, tried at
// once rather than at the failure's back-off.
func syncHashAt(vs *v1alpha1.VaultSecret, va *v1alpha1.VaultAuth, conn string) string {
	base := sourceHash(vs)
	force, forced := vs.Annotations[ForceSyncAnnotation]
	if vs.Spec.AuthRef == nil && !forced {
		return base
	}
	var spec *v1alpha1.VaultAuthSpec
	if va != nil {
		spec = &va.Spec
	}
	return shortHash(struct {
		Base       string
		AuthRef    string                  `json:",omitempty"`
		VaultAuth  *v1alpha1.VaultAuthSpec `json:",omitempty"`
		Forced     bool                    `json:",omitempty"`
		ForceSync  string                  `json:",omitempty"`
		Connection string                  `json:",omitempty"`
	}{base, authRefName(vs), spec, forced, force, conn})
}

func authRefName(vs *v1alpha1.VaultSecret) string {
	if vs.Spec.AuthRef == nil {
		return ""
	}
	return vs.Spec.AuthRef.Name
}

// observeAuth adds the VaultAuth to an observation: a missing one is the
// pass's problem (AuthNotFound, nothing reaches Vault), its spec goes into
// the source hash, and Nudge tells that the hash moved since this
// process's last pass (a VaultAuth edited or created, a new force-sync
// value), which is retried at once rather than at a back-off meant for
// retrying the same inputs.
func (r *Reconciler) observeAuth(ctx context.Context, o *observation) error {
	vs := o.vs
	va, err := r.auths.resolve(ctx, vs)
	var nf *authNotFoundError
	conn := ""
	switch {
	case errors.As(err, &nf):
		if o.Invalid == nil {
			o.Invalid = err
		}
	case err != nil:
		return err
	case va != nil:
		if o.Invalid == nil {
			o.Invalid = r.auths.check(va)
		}
		// The connection is vetted here, before anything is sent: a
		// VaultSecret whose VaultAuth may not use its connection is
		// reported with the connection's reason and reaches no Vault.
		c, err := r.auths.conns.resolve(ctx, va)
		switch {
		case err == nil:
			conn = c.Key
		case connectionReason(err) != "":
			conn = "unusable:" + connectionReason(err)
			if o.Invalid == nil {
				o.Invalid = err
			}
		default:
			// The cache could not answer: try the pass again.
			return err
		}
	}
	o.SourceHash = syncHashAt(vs, va, conn)
	if prev, ok := r.seen.Load(client.ObjectKeyFromObject(vs)); ok && prev.(string) != o.SourceHash {
		o.Nudge = true
	}
	return nil
}
