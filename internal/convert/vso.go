package convert

import (
	"fmt"
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// The Vault Secrets Operator (secrets.hashicorp.com/v1beta1).

// vsoAuth is what a VSO secret needs to know of the VaultAuth it names.
type vsoAuth struct {
	vaultNamespace string
}

func (c *converter) vso(s *source) bool {
	if s.apiVersion != "secrets.hashicorp.com/v1beta1" {
		c.warn(s.id(), "apiVersion", fmt.Sprintf("%s: only secrets.hashicorp.com/v1beta1 is read; not converted", s.apiVersion))
		return false
	}
	s.spec = s.root.child("spec")
	if s.spec == nil {
		c.warn(s.id(), "spec", "missing; not converted")
		return false
	}
	switch s.kind {
	case "VaultConnection":
		return c.vsoConnection(s)
	case "VaultAuth":
		return c.vsoAuth(s)
	case "VaultStaticSecret":
		return c.vsoStatic(s)
	case "VaultDynamicSecret":
		return c.vsoDynamic(s)
	case "VaultPKISecret":
		return c.vsoPKI(s)
	case "HCPVaultSecretsApp", "HCPAuth":
		c.warn(s.id(), "kind", "HCP Vault Secrets has no equivalent: vaultkms reads Vault itself; not converted")
	case "VaultAuthGlobal":
		c.warn(s.id(), "kind", "no equivalent: a vaultkms VaultAuth is complete in itself; write the shared settings into each VaultAuth that names it")
	case "SecretTransformation":
		c.warn(s.id(), "kind", "no equivalent: write the templates into each VaultSecret's spec.target.template")
	default:
		c.warn(s.id(), "kind", "unknown Vault Secrets Operator kind; not converted")
	}
	return false
}

func vsoConnName(ns, name string) string { return dnsName(ns, name) }

func (c *converter) vsoConnection(s *source) bool {
	sp := s.spec
	addr := sp.str("address")
	if addr == "" {
		c.warn(s.id(), "spec.address", "missing; not converted")
		return false
	}
	checkAddress(sp, "address", addr)
	spec := v1alpha1.ClusterVaultConnectionSpec{Address: addr}
	if ca := sp.str("caCertSecretRef"); ca != "" {
		// VSO reads ca.crt of a Secret in the connection's namespace.
		spec.CACert = &v1alpha1.CACertSource{SecretRef: v1alpha1.SecretKeyRef{Namespace: s.ns, Name: ca, Key: "ca.crt"}}
	}
	if skip, _ := sp.boolean("skipTLSVerify"); skip {
		sp.warn(sp.field("skipTLSVerify"), "no equivalent: vaultkms always verifies Vault's certificate; put the CA in a Secret and name it in spec.caCert")
	}
	sp.drop("tlsServerName", "no equivalent: vaultkms checks the certificate against the host of the address; use an address whose name the certificate holds")
	sp.drop("headers", "no equivalent: vaultkms sends no custom headers to Vault")
	sp.drop("timeout", "no equivalent: the controller's own request timeout applies")
	c.addConnection(vsoConnName(s.ns, s.name), s.apiVersion+" "+s.id(), spec, s.ns)
	return true
}

// checkAddress warns of a plain http:// address the controller refuses.
func checkAddress(n *node, key, addr string) {
	for _, a := range strings.Split(addr, ",") {
		u, err := url.Parse(strings.TrimSpace(a))
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			n.warn(n.field(key), fmt.Sprintf("%q is not an http(s) URL: the CRD refuses it", a))
			continue
		}
		h := u.Hostname()
		if u.Scheme == "http" && h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1" {
			n.warn(n.field(key), fmt.Sprintf("%s is plain http: the controller sends tokens over https only (http only to a loopback address); serve Vault over TLS", a))
		}
	}
}

// vsoAuthRef reads spec.vaultAuthRef: unset means VSO's default
// VaultAuth, which vaultkms does not have.
func (c *converter) vsoAuthRef(s *source) string {
	ref := s.spec.str("vaultAuthRef")
	if ref == "" {
		s.spec.warn("spec.vaultAuthRef", "unset: the peer used its operator-wide default VaultAuth; authRef names VaultAuth \"default\" in this namespace: convert or write that one")
		return "default"
	}
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		if ns != s.ns {
			s.spec.warn("spec.vaultAuthRef", fmt.Sprintf("names a VaultAuth of namespace %s: a VaultSecret uses a VaultAuth of its own namespace only; authRef names %q here: create it in %s", ns, name, s.ns))
		}
		ref = name
	}
	return ref
}

func (c *converter) vsoAuth(s *source) bool {
	sp := s.spec
	method := sp.str("method")
	mount := sp.str("mount")
	var spec v1alpha1.VaultAuthSpec
	blocks := []string{"kubernetes", "jwt", "appRole", "aws", "gcp"}
	switch method {
	case "kubernetes":
		k := sp.child("kubernetes")
		spec.Kubernetes = &v1alpha1.KubernetesAuth{Role: k.str("role"), ServiceAccountName: k.str("serviceAccount"), Mount: mount, Audiences: k.strings("audiences")}
		k.drop("tokenExpirationSeconds", "no equivalent: the controller requests short-lived tokens of its own lifetime")
		if spec.Kubernetes.Role == "" || spec.Kubernetes.ServiceAccountName == "" {
			c.warn(s.id(), "spec.kubernetes", "needs role and serviceAccount; not converted")
			return false
		}
		audienceNote(sp, "kubernetes.audiences", spec.Kubernetes.Audiences)
	case "jwt":
		j := sp.child("jwt")
		spec.JWT = &v1alpha1.JWTAuth{Role: j.str("role"), ServiceAccountName: j.str("serviceAccount"), Mount: mount, Audiences: j.strings("audiences")}
		j.drop("tokenExpirationSeconds", "no equivalent: the controller requests short-lived tokens of its own lifetime")
		j.drop("secretRef", "no equivalent: vaultkms never reads a JWT kept in a Secret; it logs in with a token of spec.jwt.serviceAccountName")
		if spec.JWT.Role == "" || spec.JWT.ServiceAccountName == "" {
			c.warn(s.id(), "spec.jwt", "needs role and serviceAccount (a service account token; a JWT from a Secret has no equivalent); not converted")
			return false
		}
		audienceNote(sp, "jwt.audiences", spec.JWT.Audiences)
	case "appRole":
		a := sp.child("appRole")
		ref := a.str("secretRef")
		if ref == "" {
			c.warn(s.id(), "spec.appRole.secretRef", "missing; not converted")
			return false
		}
		spec.AppRole = &v1alpha1.AppRoleAuth{SecretRef: ref, SecretIDKey: "id", RoleIDKey: "role-id", Mount: mount}
		if a.str("roleId") != "" {
			// The role ID is not printed: it is only ever named.
			a.warn(a.field("roleId"), fmt.Sprintf("vaultkms reads the role ID from the Secret too: add key role-id, holding this VaultAuth's roleId, to Secret %s (the secret ID stays under key id)", ref))
		}
	case "":
		c.warn(s.id(), "spec.method", "missing; not converted")
		return false
	default:
		c.warn(s.id(), "spec.method", fmt.Sprintf("%s: no equivalent (vaultkms logs in with kubernetes, jwt or appRole); not converted", method))
		return false
	}
	for _, b := range blocks {
		if b != method {
			sp.drop(b, fmt.Sprintf("ignored: spec.method is %s", method))
		}
	}
	vaultNS := sp.str("namespace")
	c.vsoAuths[s.ns+"/"+s.name] = &vsoAuth{vaultNamespace: vaultNS}
	if ref := sp.str("vaultConnectionRef"); ref != "" {
		spec.ConnectionRef = &v1alpha1.ConnectionRef{Name: c.vsoConnectionRef(s, ref, vaultNS)}
	} else if vaultNS != "" {
		sp.warn("spec.namespace", fmt.Sprintf("the default connection (the controller's flags) sets the Vault namespace: for %q, write a ClusterVaultConnection with spec.namespace and name it in spec.connectionRef", vaultNS))
	}
	sp.drop("params", "no equivalent: vaultkms sends only the role and token at login")
	sp.drop("headers", "no equivalent: vaultkms sends no custom headers to Vault")
	sp.drop("allowedNamespaces", "no equivalent: a VaultAuth serves VaultSecrets of its own namespace only")
	sp.drop("storageEncryption", "no equivalent: vaultkms keeps no Vault client cache in Kubernetes")
	sp.drop("vaultAuthGlobalRef", "no equivalent: write the shared settings into this VaultAuth")
	c.auths[s.ns+"/"+s.name] = newObject("VaultAuth", s.ns, s.name, s, spec)
	return true
}

// vsoConnectionRef names the ClusterVaultConnection for a VaultAuth's
// vaultConnectionRef; a Vault namespace makes a connection of its own,
// since vaultkms sets the Vault namespace on the connection.
func (c *converter) vsoConnectionRef(s *source, ref, vaultNS string) string {
	ns, name := s.ns, ref
	if n, r, ok := strings.Cut(ref, "/"); ok {
		ns, name = n, r
	}
	base := vsoConnName(ns, name)
	conn, ok := c.conns[base]
	if !ok {
		s.spec.warn("spec.vaultConnectionRef", fmt.Sprintf("VaultConnection %s/%s is not in the input: write ClusterVaultConnection %s (its address, CA, and allowedNamespaces including %s) or convert it too", ns, name, base, s.ns))
		return base
	}
	if vaultNS == "" || vaultNS == conn.spec.Namespace {
		return base
	}
	spec := conn.spec
	spec.Namespace = vaultNS
	full := dnsName(ns, name, vaultNS)
	c.addConnection(full, conn.from+" with Vault namespace "+vaultNS, spec, "")
	return full
}

// vsoSecretNamespace checks a secret's own Vault namespace against its
// VaultAuth's: vaultkms sets it on the connection.
func (c *converter) vsoSecretNamespace(s *source, auth string) {
	ns := s.spec.str("namespace")
	if ns == "" {
		return
	}
	a, ok := c.vsoAuths[s.ns+"/"+auth]
	if !ok || a.vaultNamespace != ns {
		s.spec.warn("spec.namespace", fmt.Sprintf("vaultkms takes the Vault namespace from the VaultAuth's connection, not the secret: give VaultAuth %s a ClusterVaultConnection with spec.namespace %q", auth, ns))
	}
}

// vsoDestination fills the target from spec.destination and returns
// false when it names no Secret.
func (c *converter) vsoDestination(s *source, spec *v1alpha1.VaultSecretSpec) bool {
	d := s.spec.child("destination")
	name := d.str("name")
	if name == "" {
		c.warn(s.id(), "spec.destination.name", "missing; not converted")
		return false
	}
	spec.Target.Name = name
	spec.Target.Labels = d.stringMap("labels")
	spec.Target.Annotations = d.stringMap("annotations")
	spec.Target.Type = secretType(d, "type")
	if create, _ := d.boolean("create"); !create && !c.opts.Adopt {
		d.warn(d.field("create"), fmt.Sprintf("false: the peer writes into an existing Secret %s; vaultkms leaves a Secret it did not create alone (a conflict) unless target.adopt is set: convert with --adopt", name))
	}
	d.skip("overwrite")
	if t := d.child("transformation"); t != nil {
		spec.Target.Template = vsoTemplates(t)
		t.drop("excludes", "no equivalent: vaultkms writes every key of the path; remove keys in Vault or read another path")
		t.drop("includes", "no equivalent: vaultkms writes every key of the path; remove keys in Vault or read another path")
		t.drop("transformationRefs", "no equivalent: write the templates into spec.target.template")
		t.skip("excludeRaw") // vaultkms never writes the _raw key
	}
	spec.RolloutRestartTargets = rolloutRestartTargets(s.spec, "rolloutRestartTargets")
	return true
}

// vsoTemplates rewrites VSO's templates, which see the data under
// .Secrets, for vaultkms, which renders over the data itself.
func vsoTemplates(t *node) map[string]string {
	tm := t.child("templates")
	if tm == nil {
		return nil
	}
	out := map[string]string{}
	for _, k := range tm.keys() {
		e := tm.child(k)
		key, text := e.str("name"), e.str("text")
		if key == "" {
			key = k
		}
		rewritten := strings.NewReplacer("get .Secrets ", "index . ", ".Secrets.", ".").Replace(text)
		if strings.Contains(rewritten, ".Secrets") || strings.Contains(rewritten, ".Annotations") || strings.Contains(rewritten, ".Labels") {
			e.warn(e.field("text"), "uses data vaultkms does not give templates (.Secrets as a whole, .Annotations, .Labels); not converted: write it by hand over the Vault keys ({{ .key }})")
			continue
		}
		out[key] = rewritten
		e.warn(e.field("text"), "rewritten from .Secrets.<key> to .<key>; vaultkms has Go text/template without Sprig functions: check it renders")
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (c *converter) vsoStatic(s *source) bool {
	sp := s.spec
	auth := c.vsoAuthRef(s)
	spec := c.vaultSecretSpec(auth, "")
	kv := &v1alpha1.KVSource{Mount: cleanMount(sp.str("mount")), Path: cleanPath(sp.str("path"))}
	switch typ := sp.str("type"); typ {
	case "kv-v2":
		kv.KVVersion = 2
		kv.Version, _ = sp.integer("version")
	case "kv-v1":
		kv.KVVersion = 1
		sp.drop("version", "KV version 1 has no versions; ignored")
	default:
		c.warn(s.id(), "spec.type", fmt.Sprintf("%q: use kv-v1 or kv-v2; not converted", typ))
		return false
	}
	if kv.Mount == "" || kv.Path == "" {
		c.warn(s.id(), "spec.mount", "mount and path are both needed; not converted")
		return false
	}
	spec.Source.KV = kv
	c.vsoSecretNamespace(s, auth)
	if ra := sp.str("refreshAfter"); ra != "" {
		d, err := parseDuration(ra)
		if err != nil {
			sp.warn("spec.refreshAfter", err.Error()+"; the default refresh (two thirds of ttl 1h) applies")
		} else {
			var note string
			spec.RefreshInterval, spec.TTL, note = refreshAndTTL(d)
			if note != "" {
				sp.warn("spec.refreshAfter", note)
			}
		}
	}
	sp.skip("hmacSecretData") // vaultkms always compares data by HMAC
	if sc := sp.child("syncConfig"); sc != nil {
		sc.drop("instantUpdates", "no equivalent: vaultkms reads Vault every refreshInterval, without Vault event notifications")
	}
	if !c.vsoDestination(s, &spec) {
		return false
	}
	c.secrets[s.ns+"/"+s.name] = newObject("VaultSecret", s.ns, s.name, s, spec)
	return true
}

func (c *converter) vsoDynamic(s *source) bool {
	sp := s.spec
	auth := c.vsoAuthRef(s)
	spec := c.vaultSecretSpec(auth, "")
	dyn := &v1alpha1.DynamicSource{Mount: cleanMount(sp.str("mount")), Path: cleanPath(sp.str("path"))}
	if dyn.Mount == "" || dyn.Path == "" {
		c.warn(s.id(), "spec.mount", "mount and path are both needed; not converted")
		return false
	}
	spec.Source.Dynamic = dyn
	c.vsoSecretNamespace(s, auth)
	if m := sp.str("requestHTTPMethod"); m != "" && !strings.EqualFold(m, "GET") {
		sp.warn("spec.requestHTTPMethod", fmt.Sprintf("%s: no equivalent: vaultkms reads dynamic paths with GET; use a path that issues on read", m))
	}
	sp.drop("params", "no equivalent: vaultkms sends no request parameters; put them in the Vault role's defaults")
	sp.drop("renewalPercent", "no equivalent: vaultkms renews or re-issues from the lease and spec.ttl")
	sp.drop("allowStaticCreds", "no equivalent: vaultkms reads leased (dynamic) credentials")
	sp.drop("refreshAfter", "no equivalent: a dynamic source refreshes on its lease")
	if sc := sp.child("syncConfig"); sc != nil {
		sc.drop("instantUpdates", "no equivalent: vaultkms has no Vault event notifications")
	}
	if revoke, ok := sp.boolean("revoke"); ok {
		spec.RevokeOnDelete = &revoke
	}
	if !c.vsoDestination(s, &spec) {
		return false
	}
	c.secrets[s.ns+"/"+s.name] = newObject("VaultSecret", s.ns, s.name, s, spec)
	return true
}

func (c *converter) vsoPKI(s *source) bool {
	sp := s.spec
	auth := c.vsoAuthRef(s)
	spec := c.vaultSecretSpec(auth, "")
	pki := &v1alpha1.PKISource{Mount: cleanMount(sp.str("mount")), Role: sp.str("role"), CommonName: sp.str("commonName"),
		AltNames: sp.strings("altNames"), IPSans: sp.strings("ipSans")}
	if pki.Mount == "" || pki.Role == "" || pki.CommonName == "" {
		c.warn(s.id(), "spec.commonName", "mount, role and commonName are all needed; not converted")
		return false
	}
	spec.Source.PKI = pki
	c.vsoSecretNamespace(s, auth)
	if ttl := sp.str("ttl"); ttl != "" {
		d, err := parseDuration(ttl)
		switch {
		case err != nil:
			sp.warn("spec.ttl", err.Error()+"; the default ttl (1h) applies")
		case d < minTTL || d > maxTTL:
			sp.warn("spec.ttl", fmt.Sprintf("%s is outside vaultkms' range (%s to %s); the default ttl (1h) applies", d, minTTL, maxTTL))
		default:
			spec.TTL = &metav1.Duration{Duration: d}
		}
	}
	if f := sp.str("format"); f != "" && f != "pem" {
		sp.warn("spec.format", fmt.Sprintf("%s: no equivalent: vaultkms writes PEM", f))
	}
	sp.drop("privateKeyFormat", "no equivalent: vaultkms writes the key as Vault issues it")
	for _, f := range []string{"uriSans", "otherSans", "userIDs", "notAfter", "excludeCNFromSans", "issuerRef"} {
		sp.drop(f, "no equivalent: vaultkms requests commonName, altNames, ipSans and ttl only; set the rest in the Vault role")
	}
	sp.drop("expiryOffset", "no equivalent: vaultkms re-issues the certificate on its own schedule before it expires")
	sp.drop("revoke", "no equivalent: vaultkms does not revoke certificates; keep their ttl short")
	sp.drop("clear", "no equivalent: vaultkms deletes the Secret at expiry")
	if !c.vsoDestination(s, &spec) {
		return false
	}
	sp.warn("spec.destination", "the Secret holds keys tls.crt, tls.key and ca.crt (type kubernetes.io/tls unless destination.type says otherwise); the peer's certificate, private_key and issuing_ca keys are not written: check what the application reads")
	c.secrets[s.ns+"/"+s.name] = newObject("VaultSecret", s.ns, s.name, s, spec)
	return true
}
