package convert

import (
	"fmt"
	"strings"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// The External Secrets Operator (external-secrets.io/v1 and v1beta1):
// stores with the vault provider.

// store is what an ExternalSecret needs of the store it names.
type store struct {
	src       *source
	mount     string // provider.vault.path; empty: the first segment of each key
	kvVersion int
	// auth is the VaultAuth spec, nil when the store's login has no
	// equivalent; the ExternalSecrets then name a VaultAuth to write.
	auth *v1alpha1.VaultAuthSpec
}

func storeKey(kind, ns, name string) string {
	if kind == "ClusterSecretStore" {
		ns = ""
	}
	return kind + "/" + ns + "/" + name
}

func (c *converter) eso(s *source) bool {
	group, version, _ := strings.Cut(s.apiVersion, "/")
	if group == "generators.external-secrets.io" {
		c.warn(s.id(), "kind", "generators have no equivalent: vaultkms reads Vault paths (a dynamic source issues credentials on read); not converted")
		return false
	}
	if version != "v1" && version != "v1beta1" {
		c.warn(s.id(), "apiVersion", fmt.Sprintf("%s: only external-secrets.io/v1 and v1beta1 are read; not converted", s.apiVersion))
		return false
	}
	s.spec = s.root.child("spec")
	if s.spec == nil {
		c.warn(s.id(), "spec", "missing; not converted")
		return false
	}
	switch s.kind {
	case "SecretStore", "ClusterSecretStore":
		return c.esoStore(s)
	case "ExternalSecret":
		return c.esoExternalSecret(s)
	case "PushSecret", "ClusterPushSecret":
		c.warn(s.id(), "kind", "no equivalent: vaultkms only reads Vault, it never writes Kubernetes Secrets into it; not converted")
	case "ClusterExternalSecret":
		c.warn(s.id(), "kind", "no equivalent: write one ExternalSecret per namespace and convert those; not converted")
	default:
		c.warn(s.id(), "kind", "unknown External Secrets Operator kind; not converted")
	}
	return false
}

func (c *converter) esoStore(s *source) bool {
	sp := s.spec
	prov := sp.child("provider")
	v := prov.child("vault")
	if v == nil {
		c.warn(s.id(), "spec.provider", fmt.Sprintf("%s: only the vault provider has an equivalent; not converted", strings.Join(prov.keys(), ",")))
		return false
	}
	cluster := s.kind == "ClusterSecretStore"
	st := &store{src: s, mount: cleanMount(v.str("path")), kvVersion: 2}
	switch ver := v.str("version"); ver {
	case "", "v2":
	case "v1":
		st.kvVersion = 1
	default:
		v.warn(v.field("version"), fmt.Sprintf("%q: use v1 or v2; v2 is assumed", ver))
	}
	server := v.str("server")
	if server == "" {
		c.warn(s.id(), "spec.provider.vault.server", "missing; not converted")
		return false
	}
	checkAddress(v, "server", server)
	conn := v1alpha1.ClusterVaultConnectionSpec{Address: server, Namespace: v.str("namespace")}
	v.drop("caBundle", "no equivalent inline: put the CA in a Secret (key ca.crt) and name it in the ClusterVaultConnection's spec.caCert")
	if cp := v.child("caProvider"); cp != nil {
		typ, name, key, ns := cp.str("type"), cp.str("name"), cp.str("key"), cp.str("namespace")
		if ns == "" {
			ns = s.ns
			if cluster {
				cp.warn(cp.field("namespace"), fmt.Sprintf("unset on a ClusterSecretStore; namespace %s assumed for the CA Secret: check spec.caCert.secretRef.namespace", ns))
			}
		}
		if typ == "Secret" && name != "" {
			conn.CACert = &v1alpha1.CACertSource{SecretRef: v1alpha1.SecretKeyRef{Namespace: ns, Name: name, Key: key}}
		} else {
			cp.warn(cp.field("type"), fmt.Sprintf("%s %s: vaultkms reads the CA from a Secret only: copy it into a Secret (key ca.crt) and name it in the ClusterVaultConnection's spec.caCert", typ, name))
		}
	}
	v.drop("tls", "no equivalent: vaultkms does not present a client certificate to Vault")
	v.drop("headers", "no equivalent: vaultkms sends no custom headers to Vault")
	v.drop("readYourWrites", "no equivalent: vaultkms only reads")
	v.drop("forwardInconsistent", "no equivalent: vaultkms only reads")
	v.skip("checkAndSet") // for PushSecret writes only
	sp.drop("controller", "no equivalent: one vaultkms controller serves every namespace its --namespace-selector picks")
	sp.drop("retrySettings", "no equivalent: the controller backs off on its own")
	sp.skip("refreshInterval") // how often the peer re-validated the store

	connName := dnsName(s.ns, s.name)
	connNS := s.ns
	if cluster {
		connName, connNS = dnsName(s.name), ""
	}
	c.addConnection(connName, s.apiVersion+" "+s.id(), conn, connNS)
	for _, cond := range sp.list("conditions") {
		for _, ns := range cond.strings("namespaces") {
			c.conns[connName].namespaces[ns] = true
		}
		cond.drop("namespaceSelector", "not converted: add the namespaces it selects to the ClusterVaultConnection's spec.allowedNamespaces")
		cond.drop("namespaceRegexes", "not converted: add the namespaces it matches to the ClusterVaultConnection's spec.allowedNamespaces")
	}
	st.auth = c.esoAuth(s, v.child("auth"), cluster)
	if st.auth != nil {
		st.auth.ConnectionRef = &v1alpha1.ConnectionRef{Name: connName}
		if !cluster {
			c.auths[s.ns+"/"+s.name] = newObject("VaultAuth", s.ns, s.name, s, *st.auth)
		}
	}
	c.stores[storeKey(s.kind, s.ns, s.name)] = st
	return true
}

// esoAuth converts provider.vault.auth; nil when it has no equivalent.
func (c *converter) esoAuth(s *source, a *node, cluster bool) *v1alpha1.VaultAuthSpec {
	if a == nil {
		c.warn(s.id(), "spec.provider.vault.auth", "missing; no VaultAuth written")
		return nil
	}
	// A ClusterSecretStore names service accounts and Secrets of one
	// namespace; a VaultAuth uses those of its own namespace only.
	otherNS := func(n *node, key string) {
		if ns := n.str(key); ns != "" {
			n.warn(n.field(key), fmt.Sprintf("%s: a VaultAuth uses service accounts and Secrets of its own namespace only; the same name is used in each namespace the VaultAuth is written to", ns))
		}
	}
	var spec v1alpha1.VaultAuthSpec
	switch {
	case a.has("kubernetes"):
		k := a.child("kubernetes")
		sa := k.child("serviceAccountRef")
		spec.Kubernetes = &v1alpha1.KubernetesAuth{Role: k.str("role"), Mount: cleanMount(k.str("mountPath")), ServiceAccountName: sa.str("name"), Audiences: sa.strings("audiences")}
		otherNS(sa, "namespace")
		k.drop("secretRef", "no equivalent: vaultkms never reads a service account token kept in a Secret; name the service account in serviceAccountName")
		if spec.Kubernetes.ServiceAccountName == "" || spec.Kubernetes.Role == "" {
			a.warn(a.field("kubernetes"), "needs role and serviceAccountRef (without one the peer logged in as itself; vaultkms never logs in as the controller); no VaultAuth written")
			return nil
		}
		audienceNote(a, "kubernetes.serviceAccountRef.audiences", spec.Kubernetes.Audiences)
	case a.has("jwt"):
		j := a.child("jwt")
		spec.JWT = &v1alpha1.JWTAuth{Role: j.str("role"), Mount: cleanMount(j.str("path"))}
		j.drop("secretRef", "no equivalent: vaultkms never reads a JWT kept in a Secret; it logs in with a service account token")
		if t := j.child("kubernetesServiceAccountToken"); t != nil {
			sa := t.child("serviceAccountRef")
			spec.JWT.ServiceAccountName = sa.str("name")
			spec.JWT.Audiences = t.strings("audiences")
			if len(spec.JWT.Audiences) == 0 {
				spec.JWT.Audiences = sa.strings("audiences")
			}
			otherNS(sa, "namespace")
			t.drop("expirationSeconds", "no equivalent: the controller requests short-lived tokens of its own lifetime")
		}
		if spec.JWT.ServiceAccountName == "" || spec.JWT.Role == "" {
			a.warn(a.field("jwt"), "needs role and kubernetesServiceAccountToken.serviceAccountRef (a JWT from a Secret has no equivalent); no VaultAuth written")
			return nil
		}
		audienceNote(a, "jwt.kubernetesServiceAccountToken.audiences", spec.JWT.Audiences)
	case a.has("appRole"):
		r := a.child("appRole")
		sec := r.child("secretRef")
		spec.AppRole = &v1alpha1.AppRoleAuth{Mount: cleanMount(r.str("path")), SecretRef: sec.str("name"), SecretIDKey: sec.str("key"), RoleIDKey: "role-id"}
		otherNS(sec, "namespace")
		if spec.AppRole.SecretRef == "" {
			a.warn(a.field("appRole.secretRef"), "missing; no VaultAuth written")
			return nil
		}
		if rr := r.child("roleRef"); rr != nil {
			if name := rr.str("name"); name == spec.AppRole.SecretRef {
				spec.AppRole.RoleIDKey = rr.str("key")
			} else {
				rr.warn(rr.field("name"), fmt.Sprintf("vaultkms reads the role ID from the secret ID's Secret: copy key %s of Secret %s into Secret %s as key role-id", rr.str("key"), name, spec.AppRole.SecretRef))
			}
			otherNS(rr, "namespace")
		}
		if r.str("roleId") != "" {
			// Named, never printed.
			r.warn(r.field("roleId"), fmt.Sprintf("vaultkms reads the role ID from a Secret: add key role-id, holding this store's roleId, to Secret %s", spec.AppRole.SecretRef))
		}
	default:
		methods := strings.Join(a.keys(), ",")
		a.warn(a.field(methods), "no equivalent: vaultkms logs in with kubernetes, jwt or appRole (never a static token, userPass, ldap, cert or iam); no VaultAuth written")
		a.skip(a.keys()...)
		return nil
	}
	a.drop("namespace", "no equivalent: the Vault namespace is the ClusterVaultConnection's spec.namespace")
	for _, k := range a.keys() {
		if k != "kubernetes" && k != "jwt" && k != "appRole" {
			a.drop(k, "a second login method: ignored")
		}
	}
	return &spec
}

// audienceNote warns when the peer requested tokens for the API server's
// own audience: vaultkms asks for "vault" unless told, and the Vault role
// must accept what is sent.
func audienceNote(a *node, field string, audiences []string) {
	if len(audiences) == 0 {
		a.warn(a.field(field), "unset: the peer's tokens carried the API server's own audience; vaultkms requests audience \"vault\" (its --token-audience): set the Vault role's audience to it")
	}
}

// esoClusterAuth writes, in namespace ns, the VaultAuth of a
// ClusterSecretStore, and returns its name.
func (c *converter) esoClusterAuth(st *store, ns string) string {
	key := ns + "/" + st.src.name
	if _, ok := c.auths[key]; !ok && st.auth != nil {
		c.auths[key] = newObject("VaultAuth", ns, st.src.name, st.src, *st.auth)
	}
	return st.src.name
}
