package syncer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// connectionPool holds one Vault client (one HTTP transport, one pool of
// TLS connections) per ClusterVaultConnection, built when first needed
// and rebuilt when the connection's spec or CA changes. A connection's
// CA is written to a file of a private directory and the client reads it
// from there, so the file-based CA reload of internal/vault serves
// connections too: clients still held by cached tokens pick up a new CA
// within seconds.
type connectionPool struct {
	// Default is the client of the controller's flags.
	Default *api.Client
	// APIReader reads the CA Secrets a connection names, by name only:
	// the cache holds no Secret but the controller's own.
	APIReader client.Reader
	// Timeout bounds every request without an earlier deadline.
	Timeout time.Duration

	mu      sync.Mutex
	dir     string
	entries map[string]*pooledClient
}

// pooledClient is a connection's client and what it was built from.
type pooledClient struct {
	sum    string
	client *api.Client
}

// readCA reads the connection's CA Secret; nil when it names none.
func (p *connectionPool) readCA(ctx context.Context, spec *v1alpha1.ClusterVaultConnectionSpec) ([]byte, error) {
	if spec.CACert == nil {
		return nil, nil
	}
	ref := spec.CACert.SecretRef
	key := orDefault(ref.Key, "ca.crt")
	var sec corev1.Secret
	if err := p.APIReader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &fieldError{ReasonCACertInvalid, fmt.Sprintf("spec.caCert.secretRef: Secret %s/%s not found; create it with the CA in key %q", ref.Namespace, ref.Name, key)}
		}
		return nil, fmt.Errorf("spec.caCert.secretRef: read Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	pem := sec.Data[key]
	if len(pem) == 0 {
		return nil, &fieldError{ReasonCACertInvalid, fmt.Sprintf("spec.caCert.secretRef.key: Secret %s/%s has no key %q; put the PEM CA there or name the key that holds it", ref.Namespace, ref.Name, key)}
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return nil, &fieldError{ReasonCACertInvalid, fmt.Sprintf("spec.caCert.secretRef: key %q of Secret %s/%s holds no PEM certificate", key, ref.Namespace, ref.Name)}
	}
	return pem, nil
}

// client returns the connection's client, building it when there is
// none or the spec or CA changed since it was built. The CA Secret is
// read each time: callers are the connection's status controller, which
// looks periodically, and logins, which are rare.
func (p *connectionPool) client(ctx context.Context, c *connection) (*api.Client, error) {
	if c.Spec == nil {
		return p.Default, nil
	}
	if err := checkConnectionSpec(c.Name, c.Spec); err != nil {
		return nil, &connectionInvalidError{name: c.Name, err: err}
	}
	ca, err := p.readCA(ctx, c.Spec)
	var fe *fieldError
	if errors.As(err, &fe) {
		return nil, &connectionInvalidError{name: c.Name, err: err}
	}
	if err != nil {
		// The API server could not answer: not the connection's fault.
		return nil, fmt.Errorf("ClusterVaultConnection %q: %w", c.Name, err)
	}
	sum := shortHash(struct {
		Key string
		CA  []byte
	}{c.Key, ca})
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[c.Name]; e != nil && e.sum == sum {
		return e.client, nil
	}
	caFile, err := p.writeCA(c.Name, ca)
	if err != nil {
		return nil, err
	}
	vc, err := vault.NewClient(vault.Config{Address: c.Spec.Address, CACert: caFile, Namespace: c.Spec.Namespace, Timeout: p.Timeout})
	if err != nil {
		return nil, &connectionInvalidError{name: c.Name, err: err}
	}
	if p.entries == nil {
		p.entries = map[string]*pooledClient{}
	}
	if old := p.entries[c.Name]; old != nil {
		// Tokens that hold the old client keep it until they are dropped
		// (their key names the old address); its idle connections go now.
		old.client.CloneConfig().HttpClient.CloseIdleConnections()
	}
	p.entries[c.Name] = &pooledClient{sum: sum, client: vc}
	return vc, nil
}

// writeCA writes the connection's CA into the pool's private directory,
// replacing the file in one rename so a reader never sees half of it;
// "" when the connection names no CA (the system's roots).
func (p *connectionPool) writeCA(name string, pem []byte) (string, error) {
	if pem == nil {
		return "", nil
	}
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "vaultkms-connections-")
		if err != nil {
			return "", fmt.Errorf("create the directory for connection CAs: %w", err)
		}
		p.dir = dir
	}
	path := filepath.Join(p.dir, name+".pem")
	if err := os.WriteFile(path+".tmp", pem, 0o600); err != nil {
		return "", fmt.Errorf("write the CA of ClusterVaultConnection %q: %w", name, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", fmt.Errorf("write the CA of ClusterVaultConnection %q: %w", name, err)
	}
	return path, nil
}

// forget drops a deleted connection's client and CA file.
func (p *connectionPool) forget(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[name]; e != nil {
		e.client.CloneConfig().HttpClient.CloseIdleConnections()
		delete(p.entries, name)
	}
	if p.dir != "" {
		_ = os.Remove(filepath.Join(p.dir, name+".pem"))
	}
}

// close removes the private directory, at the process's end.
func (p *connectionPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
}
