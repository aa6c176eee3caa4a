// Package kmsplugin implements a Kubernetes KMS v2 plugin that wraps
// kube-apiserver's DEK seeds with a Vault Transit key.
package kmsplugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/kms/pkg/service"
	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// Config tunes the plugin.
type Config struct {
	// Namespace, Mount and Key name the Transit key; Namespace is only
	// recorded in key_id, the Vault client already carries it.
	Namespace, Mount, Key string
	// AssociatedData, when set, is bound to every wrapped seed.
	AssociatedData []byte
	// RefreshInterval is how often the Transit key is re-read, which bounds
	// how long a rotation takes to show in Status. Default 10s.
	RefreshInterval time.Duration
	// MaxSilence is how long Vault may go unheard before Status stops
	// saying ok. Default three refresh intervals.
	MaxSilence time.Duration
	// CallTimeout caps one Encrypt or Decrypt when the caller's deadline is
	// later or absent. Default 5s.
	CallTimeout time.Duration
	// MaxBatch caps items per Transit request; MaxInFlight caps concurrent
	// Transit requests per operation. Defaults 128 and 2: fewer requests
	// in flight make bigger batches, which is what spares Vault's CPU.
	MaxBatch, MaxInFlight int
	// MaxQueue caps calls waiting for a Transit request per operation;
	// beyond it calls fail at once with ResourceExhausted instead of
	// piling up. Default 4096.
	MaxQueue int
}

// Limits kube-apiserver enforces on what a plugin returns.
const (
	maxKeyIDLen      = 1024
	maxCiphertextLen = 1024
)

// AssociatedDataAnnotation records a hash of --associated-data next to
// every wrapped seed, so a changed value is named in the error instead of
// surfacing as Vault's "message authentication failed".
const AssociatedDataAnnotation = "associated-data.vaultkms.io"

func (c *Config) defaults() {
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = 10 * time.Second
	}
	if c.MaxSilence <= 0 {
		c.MaxSilence = 3 * c.RefreshInterval
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 5 * time.Second
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 128
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 2
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 4096
	}
	c.Mount = transitkey.NormalizeMount(c.Mount)
	c.Namespace = transitkey.NormalizeNamespace(c.Namespace)
}

// transitAPI is the part of Transit the plugin uses.
type transitAPI interface {
	ReadKey(ctx context.Context) (transitkey.KeyInfo, error)
	EncryptBatch(ctx context.Context, token string, items []encryptItem) ([]itemResult, error)
	DecryptBatch(ctx context.Context, token string, ciphertexts []string) ([]itemResult, error)
}

// tokenWatcher is the part of the Vault session the plugin uses.
type tokenWatcher interface {
	State() vault.TokenState
	// Token is the token requests are made with.
	Token() string
	// Refused reports a 403 to a request made with token; nil means a
	// newer token is in place and the request may be retried once.
	Refused(ctx context.Context, token string, cause error) error
}

type encryptItem struct {
	version   int
	created   time.Time
	plaintext []byte
}

// currentKey is the key version Status reports and Encrypt pins.
type currentKey struct {
	id    transitkey.KeyID
	text  string
	since time.Time
}

// Plugin is the KMS v2 service. Status answers from memory; a background
// refresher (Run) keeps that memory current.
type Plugin struct {
	cfg     Config
	transit transitAPI
	tokens  tokenWatcher
	clock   clock.WithTicker
	log     logr.Logger
	m       *Metrics

	current    atomic.Pointer[currentKey]
	refreshNow chan struct{}

	hmu sync.Mutex
	h   healthInputs
	// paths holds the latest outcome of each kind of Vault request.
	paths [numPaths]pathState

	enc *batcher[encryptItem, string]
	dec *batcher[string, string]
	// adHash is the AssociatedDataAnnotation value, nil without AD.
	adHash []byte

	kmu   sync.Mutex
	kread *keyRead
}

var _ service.Service = (*Plugin)(nil)

// New returns a plugin; call Run to start its refresher.
func New(cfg Config, transit transitAPI, tokens tokenWatcher, m *Metrics, clk clock.WithTicker, log logr.Logger) *Plugin {
	cfg.defaults()
	if clk == nil {
		clk = clock.RealClock{}
	}
	if log.GetSink() == nil {
		log = logr.Discard()
	}
	p := &Plugin{cfg: cfg, transit: transit, tokens: tokens, clock: clk, log: log, m: m, refreshNow: make(chan struct{}, 1)}
	p.enc = newBatcher(cfg.MaxBatch, cfg.MaxInFlight, p.encryptBatch)
	p.dec = newBatcher(cfg.MaxBatch, cfg.MaxInFlight, p.decryptBatch)
	p.enc.maxQueue, p.dec.maxQueue = cfg.MaxQueue, cfg.MaxQueue
	if len(cfg.AssociatedData) > 0 {
		sum := sha256.Sum256(cfg.AssociatedData)
		p.adHash = []byte("sha256:" + hex.EncodeToString(sum[:]))
	}
	if m != nil {
		p.enc.observe = func(n int) { m.batchSize.WithLabelValues("encrypt").Observe(float64(n)) }
		p.dec.observe = func(n int) { m.batchSize.WithLabelValues("decrypt").Observe(float64(n)) }
	}
	return p
}

// CurrentKeyID returns the key_id Status reports, or "" before the key is read.
func (p *Plugin) CurrentKeyID() string {
	if c := p.current.Load(); c != nil {
		return c.text
	}
	return ""
}

// Status implements service.Service from memory only.
func (p *Plugin) Status(context.Context) (*service.StatusResponse, error) {
	start := p.clock.Now()
	cur := p.current.Load()
	health := p.Health()
	if cur == nil {
		p.observeOp("status", start, codes.Unavailable)
		return nil, status.Error(codes.Unavailable, health)
	}
	p.observeOp("status", start, codes.OK)
	return &service.StatusResponse{Version: "v2", Healthz: health, KeyID: cur.text}, nil
}

// Encrypt wraps a DEK seed with the key version Status currently reports.
func (p *Plugin) Encrypt(ctx context.Context, _ string, data []byte) (*service.EncryptResponse, error) {
	start := p.clock.Now()
	resp, err := p.encrypt(ctx, data)
	p.observeOp("encrypt", start, status.Code(err))
	return resp, err
}

func (p *Plugin) encrypt(ctx context.Context, data []byte) (*service.EncryptResponse, error) {
	if len(data) == 0 {
		// The caller's mistake: refused before Vault, health unchanged.
		return nil, status.Error(codes.InvalidArgument, "the plaintext to encrypt is empty; kube-apiserver sends a 32-byte DEK seed")
	}
	cur := p.current.Load()
	if cur == nil {
		return nil, status.Error(codes.Unavailable, "transit key not read yet: "+p.Health())
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	ct, err := p.enc.Submit(ctx, encryptItem{version: cur.id.Version, created: cur.id.Created, plaintext: data})
	if err != nil {
		return nil, p.grpcError("encrypt", err)
	}
	if len(ct) > maxCiphertextLen {
		return nil, status.Errorf(codes.Internal, "transit returned a %d-byte ciphertext; kube-apiserver allows %d: use a key type with shorter ciphertexts (aes256-gcm96)", len(ct), maxCiphertextLen)
	}
	v, err := transitkey.CiphertextVersion(ct)
	if err != nil {
		return nil, status.Error(codes.Internal, "transit encrypt: "+err.Error())
	}
	if v != cur.id.Version {
		return nil, status.Errorf(codes.Internal, "transit encrypted with key version %d, asked for %d", v, cur.id.Version)
	}
	resp := &service.EncryptResponse{Ciphertext: []byte(ct), KeyID: cur.text}
	if p.adHash != nil {
		resp.Annotations = map[string][]byte{AssociatedDataAnnotation: p.adHash}
	}
	return resp, nil
}

// Decrypt unwraps a seed wrapped by any key version Vault still allows.
func (p *Plugin) Decrypt(ctx context.Context, _ string, req *service.DecryptRequest) ([]byte, error) {
	start := p.clock.Now()
	pt, err := p.decrypt(ctx, req)
	p.observeOp("decrypt", start, status.Code(err))
	return pt, err
}

func (p *Plugin) decrypt(ctx context.Context, req *service.DecryptRequest) ([]byte, error) {
	if len(req.KeyID) > maxKeyIDLen || len(req.Ciphertext) > maxCiphertextLen {
		return nil, status.Errorf(codes.InvalidArgument, "key_id (%d bytes) or ciphertext (%d bytes) longer than the %d bytes kube-apiserver allows", len(req.KeyID), len(req.Ciphertext), maxCiphertextLen)
	}
	// The annotation is the seed's own record of how it was wrapped: a
	// mismatch either way is named here, before Vault answers it with an
	// authentication failure that says nothing of the flag.
	switch got, ok := req.Annotations[AssociatedDataAnnotation]; {
	case ok && !bytes.Equal(got, p.adHash):
		return nil, status.Error(codes.FailedPrecondition, "this seed was wrapped with a different --associated-data than the plugin has now (the annotation "+AssociatedDataAnnotation+" records its hash): start the plugin with the value it was wrapped with")
	case !ok && p.adHash != nil:
		return nil, status.Error(codes.FailedPrecondition, "this seed was wrapped without --associated-data (it has no annotation "+AssociatedDataAnnotation+"), and the plugin now has one: start the plugin without it; associated data can only be set on a cluster before its first seed is wrapped")
	}
	kid, err := transitkey.ParseKeyID(req.KeyID)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	want := transitkey.KeyID{Namespace: p.cfg.Namespace, Mount: p.cfg.Mount, Key: p.cfg.Key}
	if !kid.SameKey(want) {
		return nil, status.Errorf(codes.FailedPrecondition,
			"seed was wrapped by transit key %q in mount %q (namespace %q), but this plugin uses key %q in mount %q (namespace %q)",
			kid.Key, kid.Mount, kid.Namespace, want.Key, want.Mount, want.Namespace)
	}
	ct := string(req.Ciphertext)
	v, err := transitkey.CiphertextVersion(ct)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if v != kid.Version {
		return nil, status.Errorf(codes.InvalidArgument, "ciphertext is of key version %d but key_id names version %d", v, kid.Version)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	pt64, err := p.dec.Submit(ctx, ct)
	if err != nil {
		return nil, p.grpcError("decrypt", err)
	}
	pt, err := base64.StdEncoding.DecodeString(pt64)
	if err != nil {
		return nil, status.Error(codes.Internal, "transit decrypt returned plaintext that is not base64")
	}
	return pt, nil
}

// grpcError maps a Vault failure to the gRPC code kube-apiserver expects:
// Unavailable for anything that waiting can fix.
func (p *Plugin) grpcError(op string, err error) error {
	if errors.Is(err, errQueueFull) {
		return status.Errorf(codes.ResourceExhausted, "%s: %v", op, err)
	}
	switch vault.Classify(err) {
	case vault.KindUnavailable:
		return status.Errorf(codes.Unavailable, "vault %s: %s", op, vault.Describe(err))
	case vault.KindDenied:
		return status.Errorf(codes.PermissionDenied, "vault %s: %s", op, vault.Describe(err))
	case vault.KindInvalid:
		return status.Errorf(codes.InvalidArgument, "vault %s: %s", op, vault.Describe(err))
	case vault.KindNotFound:
		return status.Errorf(codes.FailedPrecondition, "vault %s: %s", op, vault.Describe(err))
	}
	return status.Errorf(codes.Internal, "vault %s: %s", op, vault.Describe(err))
}

func (p *Plugin) token() string {
	if p.tokens == nil {
		return ""
	}
	return p.tokens.Token()
}
