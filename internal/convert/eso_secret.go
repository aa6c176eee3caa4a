package convert

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// ExternalSecrets of a vault store.

// kvGroup is one Vault path an ExternalSecret reads, with the properties
// it takes from it.
type kvGroup struct {
	kv         v1alpha1.KVSource
	properties bool // data[] entries picked single keys
}

func (g *kvGroup) where() string { return g.kv.Mount + "/" + g.kv.Path }

func (c *converter) esoExternalSecret(s *source) bool {
	sp := s.spec
	ref := sp.child("secretStoreRef")
	kind := ref.str("kind")
	if kind == "" {
		kind = "SecretStore"
	}
	storeName := ref.str("name")
	st, ok := c.stores[storeKey(kind, s.ns, storeName)]
	if !ok {
		c.warn(s.id(), "spec.secretStoreRef", fmt.Sprintf("%s %s is not in the input (or not a vault store): its mount, KV version and login decide the conversion; convert them together; not converted", kind, storeName))
		return false
	}
	auth := storeName
	if kind == "ClusterSecretStore" {
		auth = c.esoClusterAuth(st, s.ns)
		if conn, ok := c.conns[dnsName(storeName)]; ok {
			conn.namespaces[s.ns] = true
		}
	}
	if st.auth == nil {
		sp.warn("spec.secretStoreRef", fmt.Sprintf("the store's login has no equivalent: authRef names VaultAuth %s, which you must write", auth))
	}

	t := sp.child("target")
	target := t.str("name")
	if target == "" {
		target = s.name
	}
	spec := c.vaultSecretSpec(auth, target)

	var groups []*kvGroup
	group := func(n *node, key, version string) *kvGroup {
		mount, path := st.mount, cleanPath(key)
		if mount == "" {
			// Without provider.vault.path, the key starts with the mount.
			mount, path, _ = strings.Cut(path, "/")
		} else if strings.HasPrefix(path, mount+"/") {
			// The peer accepts a key that repeats the store's path.
			n.warn(n.field("key"), fmt.Sprintf("starts with the store's path %s, taken as the mount: removed from the path", mount))
			path = strings.TrimPrefix(path, mount+"/")
		}
		if st.kvVersion == 2 && strings.HasPrefix(path, "data/") {
			n.warn(n.field("key"), "starts with data/, which the KV v2 API adds itself: removed")
			path = strings.TrimPrefix(path, "data/")
		}
		kv := v1alpha1.KVSource{Mount: mount, Path: path, KVVersion: st.kvVersion}
		if version != "" {
			if st.kvVersion != 2 {
				n.warn(n.field("version"), "KV version 1 has no versions; ignored")
			} else if v, err := strconv.Atoi(strings.TrimPrefix(version, "v")); err == nil && v > 0 {
				kv.Version = v
			} else {
				n.warn(n.field("version"), fmt.Sprintf("%q is not a KV version number; the latest is read", version))
			}
		}
		for _, g := range groups {
			if g.kv == kv {
				return g
			}
		}
		g := &kvGroup{kv: kv}
		groups = append(groups, g)
		return g
	}

	templates := map[string]string{}
	for _, d := range sp.list("data") {
		secretKey := d.str("secretKey")
		if c.esoForeignSource(d, kind, storeName) {
			continue
		}
		rr := d.child("remoteRef")
		key, prop := rr.str("key"), rr.str("property")
		if key == "" {
			d.warn(d.field("remoteRef.key"), "missing; entry not converted")
			continue
		}
		esoRemoteOptions(rr)
		if prop == "" {
			d.warn(d.field("remoteRef.property"), fmt.Sprintf("unset: the peer wrote the whole path as JSON under %s; no equivalent (vaultkms writes each key of the path); entry not converted", secretKey))
			continue
		}
		if strings.Contains(prop, ".") {
			rr.warn(rr.field("property"), fmt.Sprintf("%q: vaultkms does not follow nested JSON paths; it is read as one top-level key of that name", prop))
		}
		g := group(rr, key, rr.str("version"))
		g.properties = true
		if secretKey != prop {
			templates[secretKey] = "{{ index . " + strconv.Quote(prop) + " }}"
		}
	}
	for _, d := range sp.list("dataFrom") {
		if c.esoForeignSource(d, kind, storeName) {
			continue
		}
		d.drop("find", "no equivalent: vaultkms reads named paths only, never a search by name pattern or tags; list the paths instead")
		d.drop("rewrite", "no equivalent: rename keys with spec.target.template")
		if e := d.child("extract"); e != nil {
			key := e.str("key")
			if key == "" {
				e.warn(e.field("key"), "missing; entry not converted")
				continue
			}
			esoRemoteOptions(e)
			e.drop("property", "no equivalent: vaultkms writes the top-level keys of the path; nested JSON is not unpacked")
			group(e, key, e.str("version"))
		}
	}
	if len(groups) == 0 {
		c.warn(s.id(), "spec.data", "no entry could be converted (none reads a Vault path by key); not converted")
		return false
	}
	for _, g := range groups {
		if g.properties {
			sp.warn("spec.data", fmt.Sprintf("the Secret also holds every other key of %s under its own name (vaultkms writes every key of a path)", g.where()))
		}
	}
	if len(groups) == 1 {
		kv := groups[0].kv
		spec.Source.KV = &kv
	} else {
		for _, g := range groups {
			kv := g.kv
			spec.Sources = append(spec.Sources, v1alpha1.Source{KV: &kv})
		}
		sp.warn("spec.data", fmt.Sprintf("%d paths: written as spec.sources, merged into one Secret; a key two paths both hold is a KeyConflict", len(groups)))
	}

	c.esoRefresh(s, &spec)
	c.esoTarget(t, &spec, templates)
	c.secrets[s.ns+"/"+s.name] = newObject("VaultSecret", s.ns, s.name, s, spec)
	return true
}

// esoForeignSource reports a data or dataFrom entry read from a generator
// or another store; true means skip it.
func (c *converter) esoForeignSource(d *node, kind, store string) bool {
	sr := d.child("sourceRef")
	if sr == nil {
		return false
	}
	if sr.has("generatorRef") {
		sr.drop("generatorRef", "no equivalent: generators are not Vault reads; entry not converted")
		return true
	}
	if r := sr.child("storeRef"); r != nil {
		k := r.str("kind")
		if k == "" {
			k = "SecretStore"
		}
		if n := r.str("name"); k != kind || n != store {
			r.warn(r.field("name"), fmt.Sprintf("%s %s: one VaultSecret logs in once; read this path in a VaultSecret of its own; entry not converted", k, n))
			return true
		}
	}
	return false
}

// esoRemoteOptions names the options of a remote reference vaultkms does
// not have.
func esoRemoteOptions(rr *node) {
	if p := rr.str("metadataPolicy"); p != "" && p != "None" {
		rr.warn(rr.field("metadataPolicy"), fmt.Sprintf("%s: no equivalent: vaultkms reads the data, never the KV metadata", p))
	}
	if p := rr.str("decodingStrategy"); p != "" && p != "None" {
		rr.warn(rr.field("decodingStrategy"), fmt.Sprintf("%s: no equivalent: values are written as Vault holds them; decode them in the application", p))
	}
	if p := rr.str("conversionStrategy"); p != "" && p != "Default" {
		rr.warn(rr.field("conversionStrategy"), fmt.Sprintf("%s: no equivalent: values are written as Vault holds them", p))
	}
	rr.skip("nullBytePolicy")
}

// esoRefresh maps refreshInterval (default 1h) to refreshInterval and ttl.
func (c *converter) esoRefresh(s *source, spec *v1alpha1.VaultSecretSpec) {
	sp := s.spec
	if p := sp.str("refreshPolicy"); p != "" && p != "Periodic" {
		sp.warn("spec.refreshPolicy", fmt.Sprintf("%s: no equivalent: vaultkms reads Vault every refreshInterval and the Secret expires at ttl without it", p))
	}
	refresh := esoRefres
	if ri := sp.str("refreshInterval"); ri != "" {
		d, err := parseDuration(ri)
		switch {
		case err != nil:
			sp.warn("spec.refreshInterval", err.Error()+"; the peer's default 1h is used")
		case d == 0:
			sp.warn("spec.refreshInterval", "0 (never refresh): no equivalent: a vaultkms Secret lives ttl after its last read; the peer's default 1h is used")
		default:
			refresh = d
		}
	}
	var note string
	spec.RefreshInterval, spec.TTL, note = refreshAndTTL(refresh)
	if note != "" {
		sp.warn("spec.refreshInterval", note)
	}
}

// esoTarget shapes the Secret from spec.target.
func (c *converter) esoTarget(t *node, spec *v1alpha1.VaultSecretSpec, renames map[string]string) {
	switch p := t.str("creationPolicy"); p {
	case "", "Owner", "Orphan":
	case "Merge", "CreateOrMerge", "None":
		t.warn(t.field("creationPolicy"), fmt.Sprintf("%s: no equivalent: a VaultSecret owns its whole Secret; with --adopt it takes over the existing one and replaces its data", p))
	default:
		t.warn(t.field("creationPolicy"), fmt.Sprintf("%q: unknown; ignored", p))
	}
	if p := t.str("deletionPolicy"); p != "" && p != "Retain" {
		t.warn(t.field("deletionPolicy"), fmt.Sprintf("%s: no equivalent: when the path is gone from Vault, reads fail and the Secret is deleted at ttl (spec.expiryPolicy Delete)", p))
	}
	t.drop("immutable", "no equivalent: vaultkms rewrites the Secret when Vault's data changes")
	tm := t.child("template")
	if tm != nil {
		spec.Target.Type = secretType(tm, "type")
		md := tm.child("metadata")
		spec.Target.Labels = md.stringMap("labels")
		spec.Target.Annotations = md.stringMap("annotations")
		md.drop("finalizers", "no equivalent: vaultkms deletes the Secret at expiry")
		if v := tm.str("engineVersion"); v != "" && v != "v2" {
			tm.warn(tm.field("engineVersion"), fmt.Sprintf("%s: vaultkms templates are Go text/template like the peer's v2 engine; check the syntax", v))
		}
		tm.drop("templateFrom", "no equivalent: write the templates into spec.target.template")
		if p := tm.str("mergePolicy"); p != "Merge" && tm.has("data") {
			tm.warn(tm.field("mergePolicy"), "Replace (the default): the peer's Secret held only the templated keys; a vaultkms Secret also holds every Vault key")
		}
		data := tm.stringMap("data")
		for k, v := range data {
			renames[k] = v
		}
		if len(data) > 0 {
			tm.warn(tm.field("data"), "copied as written: vaultkms renders Go text/template over the Vault keys (not over data[].secretKey names) without Sprig functions: check each renders")
		}
	}
	if len(renames) > 0 {
		spec.Target.Template = renames
	}
}
