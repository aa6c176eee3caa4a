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
	"fmt"
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

// Run refreshes the Transit key until ctx ends.
func (p *Plugin) Run(ctx context.Context) {
	t := p.clock.NewTicker(p.cfg.RefreshInterval)
	defer t.Stop()
	p.refresh(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-p.refreshNow:
		}
		p.refresh(ctx)
	}
}

func (p *Plugin) requestRefresh() {
	select {
	case p.refreshNow <- struct{}{}:
	default:
	}
}

func (p *Plugin) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	start := p.clock.Now()
	tok := p.token()
	ki, err := p.transit.ReadKey(ctx)
	p.observeVault("read_key", start, err)
	p.noteVault(err)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return
		}
		p.countRefresh("error")
		if vault.Classify(err) == vault.KindDenied && p.tokens != nil {
			// A failed login shows in health and in the next refresh.
			_ = p.tokens.Refused(ctx, tok, err)
		}
		p.log.Info("cannot read transit key", "mount", p.cfg.Mount, "key", p.cfg.Key, "error", vault.Describe(err))
		p.publishHealth()
		return
	}
	p.countRefresh("ok")
	v := ki.LatestVersion
	id := transitkey.KeyID{Namespace: p.cfg.Namespace, Mount: p.cfg.Mount, Key: p.cfg.Key, Version: v, Created: ki.Created[v]}
	text := id.String()
	if len(text) > maxKeyIDLen {
		// kube-apiserver refuses such a key_id; saying so here is clearer.
		p.hmu.Lock()
		p.h.KeyKnown = false
		p.h.FailureReason = fmt.Sprintf("key_id would be %d bytes, kube-apiserver allows %d: use a shorter --transit-key, --transit-mount or --vault-namespace", len(text), maxKeyIDLen)
		p.hmu.Unlock()
		p.current.Store(nil)
		p.publishHealth()
		return
	}
	// Encrypt batches may lean on this read like on one of their own. It
	// goes in before the key it names becomes current, so a batch pinned
	// to a new version never meets an older read without that version.
	done := &keyRead{sent: start, done: make(chan struct{}), ki: ki}
	close(done.done)
	p.kmu.Lock()
	p.kread = done
	p.kmu.Unlock()
	prev := p.current.Load()
	if prev == nil || prev.text != text {
		p.current.Store(&currentKey{id: id, text: text, since: p.clock.Now()})
		if prev == nil {
			p.log.Info("transit key read", "version", v, "keyID", text)
		} else {
			p.log.Info("transit key changed", "fromVersion", prev.id.Version, "toVersion", v, "keyID", text)
		}
	}
	p.hmu.Lock()
	p.h.KeyKnown = true
	p.hmu.Unlock()
	if p.m != nil {
		p.m.keyVersion.Set(float64(v))
	}
	p.publishHealth()
}

// noteVault records a Vault answer (or its absence) for health.
func (p *Plugin) noteVault(err error) {
	now := p.clock.Now()
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if err != nil {
		switch vault.Classify(err) {
		case vault.KindUnavailable, vault.KindDenied, vault.KindNotFound:
			if !p.h.Failing {
				p.h.Failing, p.h.FailingSince = true, now
			}
			p.h.FailureReason = vault.Describe(err)
			return
		}
	}
	// Vault answered; if it refused the request, the request was at fault.
	p.h.LastSuccess = now
	p.h.Failing = false
}

// Health returns "ok" or why the plugin is not healthy.
func (p *Plugin) Health() string {
	p.hmu.Lock()
	h := p.h
	p.hmu.Unlock()
	if p.tokens != nil {
		ts := p.tokens.State()
		h.TokenValid, h.TokenExpiry, h.TokenReason = ts.Valid, ts.Expiry, ts.Reason
	} else {
		h.TokenValid = true
	}
	return h.evaluate(p.clock.Now(), p.cfg.MaxSilence)
}

func (p *Plugin) publishHealth() {
	if p.m == nil {
		return
	}
	if p.Health() == healthOK {
		p.m.healthy.Set(1)
	} else {
		p.m.healthy.Set(0)
	}
	if p.tokens != nil {
		ts := p.tokens.State()
		switch {
		case !ts.Valid:
			p.m.tokenTTL.Set(0)
		case ts.Expiry.IsZero():
			p.m.tokenTTL.Set(-1)
		default:
			p.m.tokenTTL.Set(max(0, ts.Expiry.Sub(p.clock.Now()).Seconds()))
		}
	}
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
	if got, ok := req.Annotations[AssociatedDataAnnotation]; ok && !bytes.Equal(got, p.adHash) {
		return nil, status.Error(codes.FailedPrecondition, "this seed was wrapped with a different --associated-data than the plugin has now (the annotation "+AssociatedDataAnnotation+" records its hash): start the plugin with the value it was wrapped with")
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

// encryptBatch and decryptBatch are the batchers' Vault calls.
func (p *Plugin) encryptBatch(ctx context.Context, items []encryptItem) ([]string, []error, error) {
	// The key is read beside the encrypt: a key deleted and created again
	// under the same name keeps its version numbers, and only the
	// version's creation time tells the new key from the old. A seed
	// wrapped by the new key must not leave with the old key_id.
	check := p.keyCheck()
	outs, errs, err := p.transitBatch(ctx, "encrypt", func(ctx context.Context, tok string) ([]itemResult, error) {
		return p.transit.EncryptBatch(ctx, tok, items)
	})
	var rr *keyRead
	select {
	case <-check.done:
		rr = check
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if err != nil {
		return outs, errs, err
	}
	if rr.err == nil {
		changed := false
		for i, it := range items {
			if c, ok := rr.ki.Created[it.version]; !ok || !c.Equal(it.created) {
				changed = true
				outs[i], errs[i] = "", &vault.Error{Kind: vault.KindUnavailable, Op: "transit encrypt", Detail: fmt.Sprintf("key version %d changed (the key was deleted and created again); its new key_id is being read, retry", it.version)}
			}
		}
		if changed {
			p.requestRefresh()
		}
	}
	p.noteEncryptItems(errs)
	return outs, errs, nil
}

func (p *Plugin) decryptBatch(ctx context.Context, cts []string) ([]string, []error, error) {
	return p.transitBatch(ctx, "decrypt", func(ctx context.Context, tok string) ([]itemResult, error) {
		return p.transit.DecryptBatch(ctx, tok, cts)
	})
}

// keyCheckReuse is how long after it was sent one read of the Transit key
// may vouch for the encrypt batches that follow. A read per batch cost as
// much in Vault as the encrypt it checked; one per window costs a few per
// second at any load, and a key deleted and created again is still
// noticed by every encrypt sent more than this long afterwards (before,
// the window was one round trip; deleting and recreating a key takes an
// operator three requests in any case).
const keyCheckReuse = 50 * time.Millisecond

// keyRead is one read of the Transit key that encrypt batches share.
type keyRead struct {
	sent time.Time
	done chan struct{}
	ki   transitkey.KeyInfo
	err  error
}

// failed tells whether the read has ended with an error.
func (r *keyRead) failed() bool {
	select {
	case <-r.done:
		return r.err != nil
	default:
		return false
	}
}

// keyCheck returns a read of the key sent no more than keyCheckReuse ago
// (still in flight or answered), or starts one beside the batch's encrypt.
// A failed read is never reused.
func (p *Plugin) keyCheck() *keyRead {
	now := p.clock.Now()
	p.kmu.Lock()
	defer p.kmu.Unlock()
	if r := p.kread; r != nil && now.Sub(r.sent) <= keyCheckReuse && !r.failed() {
		return r
	}
	r := &keyRead{sent: now, done: make(chan struct{})}
	p.kread = r
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CallTimeout)
		defer cancel()
		r.ki, r.err = p.transit.ReadKey(ctx)
		close(r.done)
	}()
	return r
}

// noteEncryptItems records, for health, whether an encrypt batch that
// Vault answered had any item succeed.
func (p *Plugin) noteEncryptItems(errs []error) {
	var firstErr error
	for _, e := range errs {
		if e == nil {
			p.hmu.Lock()
			p.h.EncryptFailing = false
			p.hmu.Unlock()
			return
		}
		if firstErr == nil {
			firstErr = e
		}
	}
	if firstErr == nil || vault.Classify(firstErr) == vault.KindUnavailable {
		return
	}
	p.hmu.Lock()
	p.h.EncryptFailing, p.h.EncryptFailure = true, vault.Describe(firstErr)
	p.hmu.Unlock()
	p.publishHealth()
}

func (p *Plugin) token() string {
	if p.tokens == nil {
		return ""
	}
	return p.tokens.Token()
}

// retryWaits are the pauses before the second and third attempt of a
// Transit request. Encrypt and decrypt change nothing in Vault, so a retry
// is always safe; it happens only while the caller's deadline allows.
var retryWaits = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond}

func (p *Plugin) transitBatch(ctx context.Context, op string, call func(context.Context, string) ([]itemResult, error)) ([]string, []error, error) {
	var res []itemResult
	var err error
	relogged := false
	for attempt := 0; ; attempt++ {
		start := p.clock.Now()
		tok := p.token()
		res, err = call(ctx, tok)
		p.observeVault(op, start, err)
		p.noteVault(err)
		if err != nil && vault.Classify(err) == vault.KindDenied && !relogged && p.tokens != nil {
			// A revoked or expired token: once a newer token is in
			// place, retry once so kube-apiserver's call still succeeds.
			// A valid token refused by policy is not retried.
			relogged = true
			if p.tokens.Refused(ctx, tok, err) == nil {
				attempt--
				continue
			}
		}
		if err == nil || attempt >= len(retryWaits) || vault.Classify(err) != vault.KindUnavailable || ctx.Err() != nil {
			break
		}
		// Real time, not the injected clock: this paces network retries.
		t := time.NewTimer(retryWaits[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("%w (after %d attempts)", err, attempt+1)
		case <-t.C:
		}
	}
	if err != nil {
		if k := vault.Classify(err); k == vault.KindUnavailable || k == vault.KindNotFound {
			p.requestRefresh()
		}
		p.publishHealth()
		return nil, nil, err
	}
	outs := make([]string, len(res))
	errs := make([]error, len(res))
	for i, r := range res {
		outs[i], errs[i] = r.Value, r.Err
		if r.Err != nil && op == "encrypt" {
			// An encrypt rejected for its key version means the key
			// changed under us (deleted and recreated, say): re-read it.
			p.requestRefresh()
		}
	}
	return outs, errs, nil
}

func (p *Plugin) observeOp(method string, start time.Time, code codes.Code) {
	if p.m != nil {
		p.m.operations.WithLabelValues(method, code.String()).Observe(p.clock.Since(start).Seconds())
	}
}

func (p *Plugin) observeVault(op string, start time.Time, err error) {
	if p.m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = vault.Classify(err).String()
	}
	p.m.vaultCalls.WithLabelValues(op, result).Observe(p.clock.Since(start).Seconds())
}

func (p *Plugin) countRefresh(result string) {
	if p.m != nil {
		p.m.keyRefreshes.WithLabelValues(result).Inc()
	}
}
