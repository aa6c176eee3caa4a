package syncer

import (
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
	chain := crt
	if raw, ok := s.Data["ca_chain"].([]any); ok {
		for _, c := range raw {
			if cs, ok := c.(string); ok && cs != ca {
				chain += "\n" + cs
			}
		}
	}
	return fetched{
		data:      map[string][]byte{"tls.crt": []byte(chain + "\n"), "tls.key": []byte(key + "\n"), "ca.crt": []byte(ca + "\n")},
		notBefore: cert.NotBefore, notAfter: cert.NotAfter,
	}, nil
}

// renewLease renews a lease by increment and returns what Vault granted.
func renewLease(ctx context.Context, c *api.Client, id string, increment time.Duration) (time.Duration, error) {
	s, err := c.Logical().WriteWithContext(ctx, "sys/leases/renew", map[string]any{"lease_id": id, "increment": int(increment.Seconds())})
	if err != nil {
		return 0, fmt.Errorf("renew lease: %w", err)
	}
	if s == nil {
		return 0, fmt.Errorf("renew lease: vault returned nothing")
	}
	return time.Duration(s.LeaseDuration) * time.Second, nil
}

func revokeLease(ctx context.Context, c *api.Client, id string) error {
	if _, err := c.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": id}); err != nil {
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
