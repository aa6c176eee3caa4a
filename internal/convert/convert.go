// Package convert turns the manifests of two peers, the Vault Secrets
// Operator (secrets.hashicorp.com) and the External Secrets Operator
// (external-secrets.io) with its vault provider, into vaultkms objects:
// ClusterVaultConnections, VaultAuths and VaultSecrets. Whatever has no
// equivalent is reported as a Warning naming the object and the field; it
// is never guessed at. The conversion reads manifests only: it never reads
// a Secret, so it cannot print a secret value.
package convert

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// Options change what is written.
type Options struct {
	// Adopt sets target.adopt on every VaultSecret, for the cut-over that
	// keeps the Secret the peer wrote (docs/migrate-from-vso.md).
	Adopt bool
	// DefaultNamespace is the namespace of objects that name none, as
	// `kubectl apply` would place them.
	DefaultNamespace string
}

// Warning names one field, of one object, that was not converted or was
// converted with a difference the user must know about.
type Warning struct {
	Object string // <kind>/<namespace>/<name>, or <kind>/<name> when cluster-scoped
	Field  string
	Reason string
}

func (w Warning) String() string { return w.Object + ": " + w.Field + ": " + w.Reason }

// Object is one vaultkms object to apply.
type Object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   Meta   `json:"metadata"`
	Spec       any    `json:"spec"`
}

// Meta is the part of metadata a converted object carries.
type Meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ConvertedFromAnnotation names the peer object an object came from, so
// that a reviewer can trace each one back.
const ConvertedFromAnnotation = "secrets.vaultkms.io/converted-from"

// Result is the outcome of a conversion.
type Result struct {
	// Objects in apply order: connections, then VaultAuths, then
	// VaultSecrets, each sorted by namespace and name.
	Objects  []Object
	Warnings []Warning
	// Converted counts the peer objects that produced output.
	Converted int
}

// source is one document of the input.
type source struct {
	index                       int
	apiVersion, kind, ns, name  string
	root                        *node
	spec                        *node
	clusterScoped, namespaceSet bool
}

func (s *source) id() string {
	if s.clusterScoped {
		return s.kind + "/" + s.name
	}
	return s.kind + "/" + s.ns + "/" + s.name
}

// Convert reads multi-document YAML and converts every object it knows.
// A document that is not valid YAML is an error naming its index (the
// first document is 1); nothing is converted then.
func Convert(r io.Reader, opts Options) (*Result, error) {
	if opts.DefaultNamespace == "" {
		opts.DefaultNamespace = "default"
	}
	c := newConverter(opts)
	docs, err := readDocuments(r, c)
	if err != nil {
		return nil, err
	}
	c.run(docs)
	return c.result(), nil
}

// readDocuments splits the input into documents and decodes each.
func readDocuments(r io.Reader, c *converter) ([]*source, error) {
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out []*source
	for i := 1; ; i++ {
		raw, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("document %d: not valid YAML: %w", i, err)
		}
		if len(m) == 0 {
			i-- // an empty document ("---" alone) is not counted
			continue
		}
		s := &source{index: i}
		s.apiVersion, _ = m["apiVersion"].(string)
		s.kind, _ = m["kind"].(string)
		if s.apiVersion == "" || s.kind == "" {
			return nil, fmt.Errorf("document %d: no apiVersion or kind: not a Kubernetes object", i)
		}
		if s.kind == "List" {
			return nil, fmt.Errorf("document %d: a List: write its items as separate documents (kubectl get -o yaml of one object each, or split them with yq)", i)
		}
		s.root = newNode("", m, func(field, reason string) { c.warn(s.id(), field, reason) })
		s.root.skip("apiVersion", "kind", "status")
		md := s.root.child("metadata")
		s.name = md.str("name")
		s.ns = md.str("namespace")
		s.namespaceSet = s.ns != ""
		if s.ns == "" {
			s.ns = c.opts.DefaultNamespace
		}
		// Other metadata is the peer's own (labels of the peer object,
		// managedFields, uid): none of it describes the Secret.
		if md != nil {
			md.skip(md.keys()...)
		}
		if s.name == "" {
			return nil, fmt.Errorf("document %d: %s has no metadata.name", i, s.kind)
		}
		s.clusterScoped = s.kind == "ClusterSecretStore" || s.kind == "ClusterExternalSecret" || s.kind == "ClusterPushSecret"
		out = append(out, s)
	}
}

// WriteYAML writes the objects as a multi-document YAML stream for
// `kubectl apply -f -`.
func WriteYAML(w io.Writer, objs []Object) error {
	for i, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return fmt.Errorf("%s %s: %w", o.Kind, o.Metadata.Name, err)
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// converter holds what the documents produce while they are read.
type converter struct {
	opts     Options
	warnings []Warning
	conns    map[string]*connection // by ClusterVaultConnection name
	auths    map[string]*Object     // by namespace/name
	secrets  map[string]*Object     // by namespace/name
	done     int
	// stores are the ESO stores by kind/namespace/name (namespace empty
	// for a ClusterSecretStore); vsoAuths the VSO VaultAuths by
	// namespace/name, for the secrets that name them.
	stores   map[string]*store
	vsoAuths map[string]*vsoAuth
}

// connection is a ClusterVaultConnection and the namespaces allowed to
// use it.
type connection struct {
	spec       v1alpha1.ClusterVaultConnectionSpec
	from       string
	namespaces map[string]bool
}

func newConverter(opts Options) *converter {
	return &converter{opts: opts, conns: map[string]*connection{}, auths: map[string]*Object{},
		secrets: map[string]*Object{}, stores: map[string]*store{}, vsoAuths: map[string]*vsoAuth{}}
}

func (c *converter) warn(object, field, reason string) {
	c.warnings = append(c.warnings, Warning{Object: object, Field: field, Reason: reason})
}

// run converts in dependency order: connections and stores before the
// VaultAuths that use them, VaultAuths before the secrets that name them.
func (c *converter) run(docs []*source) {
	rank := func(s *source) int {
		switch s.kind {
		case "VaultConnection", "SecretStore", "ClusterSecretStore":
			return 0
		case "VaultAuth":
			return 1
		}
		return 2
	}
	// A fixed order, not the input's, so that the output and the notes
	// are the same however the documents were concatenated.
	sort.SliceStable(docs, func(i, j int) bool {
		a, b := docs[i], docs[j]
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		return a.kind+"/"+a.ns+"/"+a.name < b.kind+"/"+b.ns+"/"+b.name
	})
	for _, s := range docs {
		group, _, _ := strings.Cut(s.apiVersion, "/")
		var ok bool
		switch group {
		case "secrets.hashicorp.com":
			ok = c.vso(s)
		case "external-secrets.io", "generators.external-secrets.io":
			ok = c.eso(s)
		default:
			c.warn(s.id(), "kind", fmt.Sprintf("%s is neither a Vault Secrets Operator nor an External Secrets Operator object; not converted", s.apiVersion))
			continue
		}
		if ok {
			c.done++
			for _, f := range s.root.leftovers() {
				c.warn(s.id(), f, "unknown field, not converted: check whether it matters")
			}
		}
	}
	c.finishConnections()
}

// addConnection records a ClusterVaultConnection, first writer wins.
func (c *converter) addConnection(name, from string, spec v1alpha1.ClusterVaultConnectionSpec, ns string) {
	if _, ok := c.conns[name]; !ok {
		c.conns[name] = &connection{spec: spec, from: from, namespaces: map[string]bool{}}
	}
	if ns != "" {
		c.conns[name].namespaces[ns] = true
	}
}

// finishConnections allows each connection to exactly the namespaces of
// its source and of the VaultAuths that name it.
func (c *converter) finishConnections() {
	for _, a := range c.auths {
		spec := a.Spec.(v1alpha1.VaultAuthSpec)
		if spec.ConnectionRef == nil {
			continue
		}
		if conn, ok := c.conns[spec.ConnectionRef.Name]; ok {
			conn.namespaces[a.Metadata.Namespace] = true
		}
	}
	names := make([]string, 0, len(c.conns))
	for name := range c.conns {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		conn := c.conns[name]
		if len(conn.namespaces) == 0 {
			c.warn("ClusterVaultConnection/"+name, "spec.allowedNamespaces", "no VaultAuth in the input uses it, so it allows no namespace: add the namespaces to allowedNamespaces")
			continue
		}
		var nss []string
		for ns := range conn.namespaces {
			nss = append(nss, ns)
		}
		sort.Strings(nss)
		conn.spec.AllowedNamespaces = namespaceSelector(nss)
	}
}

func (c *converter) result() *Result {
	r := &Result{Warnings: c.warnings, Converted: c.done}
	names := make([]string, 0, len(c.conns))
	for n := range c.conns {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		conn := c.conns[n]
		r.Objects = append(r.Objects, Object{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ClusterVaultConnection",
			Metadata: Meta{Name: n, Annotations: map[string]string{ConvertedFromAnnotation: conn.from}}, Spec: conn.spec})
	}
	for _, set := range []map[string]*Object{c.auths, c.secrets} {
		keys := make([]string, 0, len(set))
		for k := range set {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			r.Objects = append(r.Objects, *set[k])
		}
	}
	return r
}

// newObject builds a namespaced vaultkms object converted from s.
func newObject(kind, ns, name string, s *source, spec any) *Object {
	return &Object{APIVersion: v1alpha1.GroupVersion.String(), Kind: kind,
		Metadata: Meta{Name: name, Namespace: ns, Annotations: map[string]string{ConvertedFromAnnotation: s.apiVersion + " " + s.id()}},
		Spec:     spec}
}
