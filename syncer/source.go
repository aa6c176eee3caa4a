package syncer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// fetched is what one read of a source returned.
type fetched struct {
	data map[string][]byte
	// lease, for dynamic sources.
	leaseID        string
	leaseDuration  time.Duration
	leaseRenewable bool
	// notBefore and notAfter, for pki.
	notBefore, notAfter time.Time
}

// sourceKind is what differs between kv, dynamic and pki sources: how
// data is fetched, when it is refreshed and expires, whether it can be
// renewed, and what deletion releases. The reconciler only reads, decides
// and writes.
type sourceKind interface {
	// name is the kind, for metrics and logs.
	name() string
	// fetch reads or issues the data under the tenant's client.
	fetch(ctx context.Context, c *api.Client, vs *v1alpha1.VaultSecret, src *v1alpha1.Source) (fetched, error)
	// plan returns when to refresh and when the Secret expires, for data
	// fetched at now. tokenEnd is the end of the token that fetched it.
	plan(now time.Time, vs *v1alpha1.VaultSecret, f fetched, tokenEnd time.Time) (refreshAt, expiresAt time.Time)
	// leased tells whether the kind holds a lease to renew and revoke.
	leased() bool
}

func kindOf(vs *v1alpha1.VaultSecret) sourceKind {
	if len(vs.Spec.Sources) > 0 {
		k := multiKind{}
		for _, src := range vs.Spec.Sources {
			k.dynamic = k.dynamic || src.Dynamic != nil
		}
		return k
	}
	return kindOfSource(&vs.Spec.Source)
}

// kindOfSource is the kind of one source.
func kindOfSource(src *v1alpha1.Source) sourceKind {
	switch {
	case src.Dynamic != nil:
		return dynamicKind{}
	case src.PKI != nil:
		return pkiKind{}
	}
	return kvKind{}
}

// kvKind: a KV secret, re-read every ttl; nothing to renew or release.
type kvKind struct{}

func (kvKind) name() string { return "kv" }
func (kvKind) fetch(ctx context.Context, c *api.Client, _ *v1alpha1.VaultSecret, src *v1alpha1.Source) (fetched, error) {
	return readKV(ctx, c, src.KV)
}
func (kvKind) plan(now time.Time, vs *v1alpha1.VaultSecret, _ fetched, _ time.Time) (time.Time, time.Time) {
	return KVPlan(now, wantedTTL(vs), refreshInterval(vs), jitterFor(string(vs.UID)))
}
func (kvKind) leased() bool { return false }

// pkiKind: a certificate, re-issued at two thirds of its life; it cannot
// be renewed, and is not revoked at deletion (it expires).
type pkiKind struct{}

func (pkiKind) name() string { return "pki" }
func (pkiKind) fetch(ctx context.Context, c *api.Client, vs *v1alpha1.VaultSecret, src *v1alpha1.Source) (fetched, error) {
	return issuePKI(ctx, c, src.PKI, wantedTTL(vs))
}
func (pkiKind) plan(_ time.Time, vs *v1alpha1.VaultSecret, f fetched, _ time.Time) (time.Time, time.Time) {
	return PKIPlan(f.notBefore, f.notAfter, jitterFor(string(vs.UID)))
}
func (pkiKind) leased() bool { return false }

// dynamicKind: leased credentials, renewed while useful, re-issued before
// the lease or the token that created it ends, revoked when replaced or
// deleted.
type dynamicKind struct{}

func (dynamicKind) name() string { return "dynamic" }
func (dynamicKind) fetch(ctx context.Context, c *api.Client, _ *v1alpha1.VaultSecret, src *v1alpha1.Source) (fetched, error) {
	return readDynamic(ctx, c, src.Dynamic)
}
func (dynamicKind) plan(now time.Time, vs *v1alpha1.VaultSecret, f fetched, tokenEnd time.Time) (time.Time, time.Time) {
	expiresAt := EffectiveEnd(now.Add(f.leaseDuration), tokenEnd)
	_, refreshAt := DecideLease(now, LeaseFacts{IssuedAt: now, RenewedAt: now, ExpiresAt: now.Add(f.leaseDuration), TokenExpiresAt: tokenEnd, TokenLive: true,
		Renewable: f.leaseRenewable, Wanted: wantedTTL(vs)}, jitterFor(string(vs.UID)))
	return refreshAt, expiresAt
}
func (dynamicKind) leased() bool { return true }

func readKV(ctx context.Context, c *api.Client, src *v1alpha1.KVSource) (fetched, error) {
	mount := strings.Trim(src.Mount, "/")
	if src.KVVersion == 1 {
		s, err := c.Logical().ReadWithContext(ctx, mount+"/"+src.Path)
		if err != nil {
			return fetched{}, fmt.Errorf("read kv %s/%s: %w", mount, src.Path, err)
		}
		if s == nil {
			return fetched{}, fmt.Errorf("read kv %s/%s: %w", mount, src.Path, errNotFound)
		}
		return fetched{data: toBytes(s.Data)}, nil
	}
	var q map[string][]string
	if src.Version > 0 {
		q = url.Values{"version": {strconv.Itoa(src.Version)}}
	}
	s, err := c.Logical().ReadWithDataWithContext(ctx, mount+"/data/"+src.Path, q)
	if err != nil {
		return fetched{}, fmt.Errorf("read kv %s/%s: %w", mount, src.Path, err)
	}
	if s == nil || s.Data == nil {
		return fetched{}, fmt.Errorf("read kv %s/%s: %w", mount, src.Path, errNotFound)
	}
	inner, ok := s.Data["data"].(map[string]any)
	if !ok {
		return fetched{}, fmt.Errorf("read kv %s/%s: %w (deleted or destroyed version)", mount, src.Path, errNotFound)
	}
	return fetched{data: toBytes(inner)}, nil
}

func readDynamic(ctx context.Context, c *api.Client, src *v1alpha1.DynamicSource) (fetched, error) {
	p := strings.Trim(src.Mount, "/") + "/" + src.Path
	s, err := c.Logical().ReadWithContext(ctx, p)
	if err != nil {
		return fetched{}, fmt.Errorf("read %s: %w", p, err)
	}
	if s == nil {
		return fetched{}, fmt.Errorf("read %s: %w", p, errNotFound)
	}
	if s.LeaseID == "" {
		return fetched{}, fmt.Errorf("read %s: vault returned no lease; use source.kv for static secrets", p)
	}
	return fetched{data: toBytes(s.Data), leaseID: s.LeaseID, leaseDuration: time.Duration(s.LeaseDuration) * time.Second, leaseRenewable: s.Renewable}, nil
}

func issuePKI(ctx context.Context, c *api.Client, src *v1alpha1.PKISource, ttl time.Duration) (fetched, error) {
	p := strings.Trim(src.Mount, "/") + "/issue/" + src.Role
	body := map[string]any{"common_name": src.CommonName, "ttl": ttl.String()}
	if len(src.AltNames) > 0 {
		body["alt_names"] = strings.Join(src.AltNames, ",")
	}
	if len(src.IPSans) > 0 {
		body["ip_sans"] = strings.Join(src.IPSans, ",")
	}
	s, err := c.Logical().WriteWithContext(ctx, p, body)
	if err != nil {
		return fetched{}, fmt.Errorf("issue certificate at %s: %w", p, err)
	}
	if s == nil || s.Data == nil {
		return fetched{}, fmt.Errorf("issue certificate at %s: vault returned nothing", p)
	}
	crt, _ := s.Data["certificate"].(string)
	key, _ := s.Data["private_key"].(string)
	ca, _ := s.Data["issuing_ca"].(string)
	block, _ := pem.Decode([]byte(crt))
	if block == nil {
		return fetched{}, fmt.Errorf("issue certificate at %s: no certificate in the answer", p)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fetched{}, fmt.Errorf("issue certificate at %s: %w", p, err)
	}
	chain, err := leafAndChain(crt, ca, s.Data["ca_chain"])
	if err != nil {
		return fetched{}, fmt.Errorf("issue certificate at %s: %w", p, err)
	}
	return fetched{
		data:      map[string][]byte{"tls.crt": []byte(chain), "tls.key": []byte(key + "\n"), "ca.crt": []byte(ca + "\n")},
		notBefore: cert.NotBefore, notAfter: cert.NotAfter,
	}, nil
}

// renewLease renews a lease by increment and returns what Vault granted.
// It asks with the path form of the endpoint (sys/leases/renew/<lease
// id>), which lets a policy limit a tenant to the leases under its own
// path; refused, it asks with the body form (sys/leases/renew), which is
// what Vault's documentation grants. Refused both ways, it says which
// policy line is missing.
func renewLease(ctx context.Context, c *api.Client, id string, increment time.Duration) (time.Duration, error) {
	body := map[string]any{"increment": int(increment.Seconds())}
	s, err := c.Logical().WriteWithContext(ctx, "sys/leases/renew/"+id, body)
	if err != nil && vault.Classify(err) == vault.KindDenied {
		body["lease_id"] = id
		var bodyErr error
		s, bodyErr = c.Logical().WriteWithContext(ctx, "sys/leases/renew", body)
		if bodyErr != nil && vault.Classify(bodyErr) == vault.KindDenied {
			return 0, &renewDeniedError{leaseID: id, err: bodyErr}
		}
		err = bodyErr
	}
	if err != nil {
		return 0, fmt.Errorf("renew lease: %w", err)
	}
	if s == nil {
		return 0, fmt.Errorf("renew lease: vault returned nothing")
	}
	return time.Duration(s.LeaseDuration) * time.Second, nil
}

// renewDeniedError is a renewal refused in both forms: a policy to fix,
// named in the message (lease ids are not secrets).
type renewDeniedError struct {
	leaseID string
	err     error
}

func (e *renewDeniedError) Error() string {
	prefix := e.leaseID
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		prefix = prefix[:i+1]
	}
	return fmt.Sprintf(`Vault refused to renew the lease, both as sys/leases/renew/<lease id> and as sys/leases/renew; add to the role's policy: path "sys/leases/renew/%s*" { capabilities = ["update"] }`, prefix)
}

func (e *renewDeniedError) Unwrap() error { return e.err }

func revokeLease(ctx context.Context, c *api.Client, id string) error {
	if _, err := c.Logical().WriteWithContext(ctx, "sys/leases/revoke/"+id, nil); err != nil {
		return fmt.Errorf("revoke lease: %w", err)
	}
	return nil
}

// toBytes turns Vault's JSON values into Secret data: strings as they
// are, anything else as JSON.
func toBytes(m map[string]any) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = []byte(x)
		case nil:
			out[k] = nil
		default:
			b, _ := json.Marshal(x)
			out[k] = b
		}
	}
	return out
}

// leafAndChain returns tls.crt's content: the leaf, then the chain that
// issued it up to but not including the self-signed root, which clients
// must already trust and must not receive from the server.
func leafAndChain(leaf, issuingCA string, rawChain any) (string, error) {
	var chain []string
	if list, ok := rawChain.([]any); ok {
		for _, c := range list {
			if s, ok := c.(string); ok {
				chain = append(chain, s)
			}
		}
	}
	if len(chain) == 0 && issuingCA != "" {
		chain = []string{issuingCA}
	}
	out := strings.TrimSpace(leaf) + "\n"
	for _, c := range chain {
		block, _ := pem.Decode([]byte(c))
		if block == nil {
			return "", fmt.Errorf("unparsable certificate in ca_chain")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("ca_chain: %w", err)
		}
		if selfSigned(cert) {
			continue
		}
		out += strings.TrimSpace(c) + "\n"
	}
	return out, nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
