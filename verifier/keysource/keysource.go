// Package keysource finds which key_id is current: from the plugin's own
// Status, from the Transit key in Vault (through the plugin's key_id
// format), and from what each kube-apiserver reports in its metrics.
package keysource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/vaultkms/vaultkms/internal/transitkey"
)

// SocketPath accepts the plugin socket as a path (/run/vaultkms/kms.sock)
// or as the EncryptionConfiguration writes it (unix:///run/vaultkms/kms.sock).
func SocketPath(s string) (string, error) {
	p := s
	if rest, ok := strings.CutPrefix(s, "unix://"); ok {
		p = rest
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("--kms-socket %q: give an absolute path or unix:///absolute/path, as in the EncryptionConfiguration's endpoint", s)
	}
	return p, nil
}

// FromPlugin asks the plugin on socket for its Status.
func FromPlugin(ctx context.Context, socket string) (keyID, healthz string, err error) {
	path, err := SocketPath(socket)
	if err != nil {
		return "", "", err
	}
	// "unix:" with an absolute path has no authority to misread.
	conn, err := grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", "", fmt.Errorf("connect to plugin socket %q: %w", socket, err)
	}
	defer conn.Close()
	st, err := kmsapi.NewKeyManagementServiceClient(conn).Status(ctx, &kmsapi.StatusRequest{})
	if err != nil {
		return "", "", fmt.Errorf("plugin status on %q: %w", socket, err)
	}
	return st.KeyId, st.Healthz, nil
}

// TransitKey describes the Transit key as the verifier needs it.
type TransitKey struct {
	Current        transitkey.KeyID
	MinDecryption  int
	Versions       map[int]time.Time
	LatestVersion  int
	Namespace      string
	Mount, KeyName string
}

// FromVault reads the Transit key and builds the key_id the plugin reports
// for its latest version.
func FromVault(ctx context.Context, c *api.Client, namespace, mount, key string) (TransitKey, error) {
	ki, err := transitkey.Read(ctx, c, mount, key)
	if err != nil {
		return TransitKey{}, err
	}
	return transitKeyOf(namespace, mount, key, ki), nil
}

// transitKeyOf builds the TransitKey of what Vault answered, with the
// key_id spelled exactly as the plugin reports it.
func transitKeyOf(namespace, mount, key string, ki transitkey.KeyInfo) TransitKey {
	cur := transitkey.NewKeyID(namespace, mount, key, ki.LatestVersion, ki.Created[ki.LatestVersion])
	return TransitKey{
		Current:       cur,
		MinDecryption: ki.MinDecryptionVersion,
		Versions:      ki.Created,
		LatestVersion: ki.LatestVersion,
		Namespace:     cur.Namespace, Mount: cur.Mount, KeyName: key,
	}
}

// HashKeyID is how kube-apiserver names a key_id in its metrics.
func HashKeyID(keyID string) string {
	sum := sha256.Sum256([]byte(keyID))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// APIServerKey is the key_id hash one API server last saw from a provider.
type APIServerKey struct {
	APIServerIDHash string    `json:"apiserverIDHash"`
	Provider        string    `json:"provider"`
	KeyIDHash       string    `json:"keyIDHash"`
	LastSeen        time.Time `json:"lastSeen"`
}

const keyIDMetric = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds"

// AllFromAPIServerMetrics reads one API server's /metrics text and returns
// every key_id hash it reports, with when it last saw each.
func AllFromAPIServerMetrics(r io.Reader) ([]APIServerKey, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse API server metrics: %w", err)
	}
	fam, ok := fams[keyIDMetric]
	if !ok {
		return nil, nil
	}
	var out []APIServerKey
	for _, m := range fam.GetMetric() {
		out = append(out, APIServerKey{
			APIServerIDHash: label(m, "apiserver_id_hash"),
			Provider:        label(m, "provider_name"),
			KeyIDHash:       label(m, "key_id_hash"),
			LastSeen:        time.Unix(int64(m.GetGauge().GetValue()), 0).UTC(),
		})
	}
	return out, nil
}

// FromAPIServerMetrics reads one API server's /metrics text and returns,
// per API server and provider, the key_id hash with the newest timestamp.
func FromAPIServerMetrics(r io.Reader) ([]APIServerKey, error) {
	all, err := AllFromAPIServerMetrics(r)
	if err != nil {
		return nil, err
	}
	newest := map[[2]string]APIServerKey{}
	for _, k := range all {
		id := [2]string{k.APIServerIDHash, k.Provider}
		if cur, ok := newest[id]; !ok || k.LastSeen.After(cur.LastSeen) {
			newest[id] = k
		}
	}
	out := make([]APIServerKey, 0, len(newest))
	for _, k := range newest {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].APIServerIDHash+out[i].Provider < out[j].APIServerIDHash+out[j].Provider
	})
	return out, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Agreement tells whether every API server's newest key_id for provider is
// keyID.
func Agreement(keys []APIServerKey, provider, keyID string) (agree bool, servers int) {
	want := HashKeyID(keyID)
	agree = true
	for _, k := range keys {
		if provider != "" && k.Provider != provider {
			continue
		}
		servers++
		if k.KeyIDHash != want {
			agree = false
		}
	}
	return agree && servers > 0, servers
}
