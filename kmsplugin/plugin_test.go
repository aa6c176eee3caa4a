package kmsplugin

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/kms/pkg/service"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
)

// stubTransit stands in for Vault in tests of the plugin's own decisions
// (which key_id, which health); Vault itself is exercised in e2e/.
type stubTransit struct {
	mu      sync.Mutex
	info    transitkey.KeyInfo
	readErr error
	encErr  error
	reads   int
	asked   []int
	// wrapOther makes encrypt answer a ciphertext of another seed (a
	// stale or foreign answer); decErr fails every decrypt request.
	wrapOther bool
	decErr    error
	// blockEncrypt makes encrypt wait for its context to end.
	blockEncrypt bool
}

func (s *stubTransit) ReadKey(context.Context) (transitkey.KeyInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return s.info, s.readErr
}

func (s *stubTransit) EncryptBatch(ctx context.Context, _ string, items []encryptItem) ([]itemResult, error) {
	if s.blockEncrypt {
		<-ctx.Done()
		return nil, vault.Wrap("transit encrypt", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.encErr != nil {
		return nil, s.encErr
	}
	out := make([]itemResult, len(items))
	for i, it := range items {
		s.asked = append(s.asked, it.version)
		pt := it.plaintext
		if s.wrapOther {
			pt = []byte("another request's seed")
		}
		// The fake's "ciphertext" is the plaintext itself, so that
		// decrypting it gives back what was wrapped.
		out[i].Value = "vault:v" + itoa(it.version) + ":" + base64.StdEncoding.EncodeToString(pt)
	}
	return out, nil
}

func (s *stubTransit) DecryptBatch(_ context.Context, _ string, cts []string) ([]itemResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.decErr != nil {
		return nil, s.decErr
	}
	out := make([]itemResult, len(cts))
	for i, ct := range cts {
		if j := strings.LastIndexByte(ct, ':'); j >= 0 {
			out[i].Value = ct[j+1:]
		}
	}
	return out, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

type stubTokens struct{ state vault.TokenState }

func (s *stubTokens) State() vault.TokenState { return s.state }
func (s *stubTokens) Token() string           { return "" }
func (s *stubTokens) Refused(context.Context, string, error) error {
	return errors.New("no vault here")
}

func newTestPlugin(tr *stubTransit) (*Plugin, *clocktesting.FakeClock) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	p := New(Config{Mount: "transit", Key: "kms", RefreshInterval: 10 * time.Second}, tr, &stubTokens{state: vault.TokenState{Valid: true}}, nil, clk, logr.Discard())
	return p, clk
}

func keyInfo(latest int) transitkey.KeyInfo {
	ki := transitkey.KeyInfo{LatestVersion: latest, MinDecryptionVersion: 1, Created: map[int]time.Time{}}
	for v := 1; v <= latest; v++ {
		ki.Created[v] = time.Unix(int64(1000*v), 0).UTC()
	}
	return ki
}

func TestStatusBeforeFirstReadIsUnavailable(t *testing.T) {
	p, _ := newTestPlugin(&stubTransit{})
	_, err := p.Status(context.Background())
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Status before the key is known: %v, want Unavailable", err)
	}
}

// The first key_id Status gives comes with health "ok": kube-apiserver,
// polling Status while the first read completes, must never see a key_id
// beside "transit key not read yet" (seen in e2e as a flaky Status).
// Status is asked from inside the plugin's own "transit key read" log
// line, the moment the key becomes current.
func TestFirstKeyIDComesHealthy(t *testing.T) {
	var p *Plugin
	var seen []string
	log := funcr.New(func(_, args string) {
		if strings.Contains(args, `"msg"="transit key read"`) {
			st, err := p.Status(context.Background())
			if err != nil {
				seen = append(seen, err.Error())
				return
			}
			seen = append(seen, st.KeyID+" "+st.Healthz)
		}
	}, funcr.Options{})
	p = New(Config{Mount: "transit", Key: "kms", RefreshInterval: 10 * time.Second}, &stubTransit{info: keyInfo(1)},
		&stubTokens{state: vault.TokenState{Valid: true}}, nil, clocktesting.NewFakeClock(time.Now()), log)
	p.refresh(context.Background())
	if len(seen) != 1 || !strings.HasSuffix(seen[0], " ok") {
		t.Fatalf("Status as the first key became current: %q, want a key_id with health ok", seen)
	}
}

// A key_id kube-apiserver would refuse is never current, and Status and
// /readyz both say why.
func TestKeyIDTooLongIsNeverCurrent(t *testing.T) {
	p := New(Config{Mount: "transit", Key: strings.Repeat("k", maxKeyIDLen), RefreshInterval: 10 * time.Second}, &stubTransit{info: keyInfo(1)},
		&stubTokens{state: vault.TokenState{Valid: true}}, nil, clocktesting.NewFakeClock(time.Now()), logr.Discard())
	p.refresh(context.Background())
	if _, err := p.Status(context.Background()); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "key_id would be") {
		t.Fatalf("Status with a too long key_id: %v, want Unavailable naming the length", err)
	}
	rec := httptest.NewRecorder()
	HealthHandler(p, prometheus.NewRegistry()).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "key_id would be") {
		t.Fatalf("/readyz: %d %q", rec.Code, rec.Body.String())
	}
}

func TestStatusAndEncryptAgreeAcrossRotation(t *testing.T) {
	tr := &stubTransit{info: keyInfo(1)}
	p, clk := newTestPlugin(tr)
	p.refresh(context.Background())
	st, err := p.Status(context.Background())
	if err != nil || st.Healthz != "ok" || st.Version != "v2" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	enc, err := p.Encrypt(context.Background(), "uid", []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	if enc.KeyID != st.KeyID {
		t.Fatalf("Encrypt key_id %q differs from Status %q", enc.KeyID, st.KeyID)
	}
	// Rotate in Vault: until the refresher reads the key, both keep
	// reporting version 1, and Encrypt keeps pinning it.
	tr.mu.Lock()
	tr.info = keyInfo(2)
	tr.mu.Unlock()
	enc2, _ := p.Encrypt(context.Background(), "uid", []byte("seed"))
	if enc2.KeyID != st.KeyID || tr.asked[len(tr.asked)-1] != 1 {
		t.Fatalf("before refresh: key_id %q, asked version %d", enc2.KeyID, tr.asked[len(tr.asked)-1])
	}
	clk.Step(10 * time.Second)
	p.refresh(context.Background())
	st2, _ := p.Status(context.Background())
	enc3, _ := p.Encrypt(context.Background(), "uid", []byte("seed"))
	if st2.KeyID == st.KeyID || enc3.KeyID != st2.KeyID || tr.asked[len(tr.asked)-1] != 2 {
		t.Fatalf("after refresh: status %q, encrypt %q, asked version %d", st2.KeyID, enc3.KeyID, tr.asked[len(tr.asked)-1])
	}
	id, err := transitkey.ParseKeyID(st2.KeyID)
	if err != nil || id.Version != 2 || !id.Created.Equal(time.Unix(2000, 0)) {
		t.Fatalf("key_id %q parsed to %+v, %v", st2.KeyID, id, err)
	}
}

func TestStatusNeverCallsVault(t *testing.T) {
	tr := &stubTransit{info: keyInfo(1)}
	p, _ := newTestPlugin(tr)
	p.refresh(context.Background())
	for range 100 {
		p.Status(context.Background())
	}
	if tr.reads != 1 {
		t.Fatalf("Status read the key %d times; only the refresher may", tr.reads-1)
	}
}

func TestVaultDownMakesEncryptUnavailableAndHealthNamesIt(t *testing.T) {
	tr := &stubTransit{info: keyInfo(1)}
	p, _ := newTestPlugin(tr)
	p.refresh(context.Background())
	down := &vault.StatusError{Code: 503, Errors: []string{"Vault is sealed"}}
	tr.encErr, tr.readErr = down, down
	_, err := p.Encrypt(context.Background(), "uid", []byte("seed"))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Encrypt with Vault sealed: %v, want Unavailable", err)
	}
	st, _ := p.Status(context.Background())
	if st.Healthz == "ok" || !strings.Contains(st.Healthz, "sealed") {
		t.Fatalf("healthz %q should name the sealed Vault", st.Healthz)
	}
	// Recovery needs no restart.
	tr.encErr, tr.readErr = nil, nil
	p.refresh(context.Background())
	if st, _ := p.Status(context.Background()); st.Healthz != "ok" {
		t.Fatalf("healthz after recovery %q", st.Healthz)
	}
}

func TestDecryptChecksKeyIDAgainstCiphertext(t *testing.T) {
	tr := &stubTransit{info: keyInfo(2)}
	p, _ := newTestPlugin(tr)
	p.refresh(context.Background())
	good := transitkey.KeyID{Mount: "transit", Key: "kms", Version: 2, Created: time.Unix(2000, 0)}.String()
	cases := []struct {
		name string
		req  service.DecryptRequest
		code codes.Code
	}{
		{"matching", service.DecryptRequest{KeyID: good, Ciphertext: []byte("vault:v2:eA==")}, codes.OK},
		{"version mismatch", service.DecryptRequest{KeyID: good, Ciphertext: []byte("vault:v1:eA==")}, codes.InvalidArgument},
		{"foreign key_id", service.DecryptRequest{KeyID: "aws:arn:x", Ciphertext: []byte("vault:v2:eA==")}, codes.InvalidArgument},
		{"other transit key", service.DecryptRequest{KeyID: transitkey.KeyID{Mount: "transit", Key: "other", Version: 2, Created: time.Unix(2000, 0)}.String(), Ciphertext: []byte("vault:v2:eA==")}, codes.FailedPrecondition},
		{"not a transit ciphertext", service.DecryptRequest{KeyID: good, Ciphertext: []byte{0, 1, 2}}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Decrypt(context.Background(), "uid", &tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("Decrypt: %v, want %s", err, tc.code)
			}
		})
	}
}

func TestErrorsCarryNoPayload(t *testing.T) {
	tr := &stubTransit{info: keyInfo(1), encErr: errors.New("boom")}
	p, _ := newTestPlugin(tr)
	p.refresh(context.Background())
	seed := "super-secret-seed-material"
	_, err := p.Encrypt(context.Background(), "uid", []byte(seed))
	if err == nil || strings.Contains(err.Error(), seed) {
		t.Fatalf("error %v", err)
	}
}

// TestEncryptKeyCheckIsSharedForAWindow pins how encrypt batches check
// that the key was not deleted and created again: a read of the key sent
// within keyCheckReuse vouches for them, the refresher's read included;
// an older or failed read does not.
func TestEncryptKeyCheckIsSharedForAWindow(t *testing.T) {
	ctx := context.Background()
	recreated := keyInfo(1)
	recreated.Created[1] = time.Unix(5000, 0).UTC()
	steps := []struct {
		name      string
		step      time.Duration // clock moves before the encrypt
		info      *transitkey.KeyInfo
		readErr   error
		wantReads int // reads by encrypt batches so far
		wantCode  codes.Code
	}{
		{name: "the refresher's read vouches", wantReads: 0, wantCode: codes.OK},
		{name: "still within the window", step: keyCheckReuse / 2, wantReads: 0, wantCode: codes.OK},
		{name: "past the window, a read of its own", step: keyCheckReuse, wantReads: 1, wantCode: codes.OK},
		{name: "within the window of that read", step: time.Millisecond, wantReads: 1, wantCode: codes.OK},
		{name: "a failed read lets the batch through", step: 2 * keyCheckReuse, readErr: errors.New("vault down"), wantReads: 2, wantCode: codes.OK},
		{name: "and is not reused", step: time.Millisecond, wantReads: 3, wantCode: codes.OK},
		{name: "recreated key within the window is not seen yet", step: time.Millisecond, info: &recreated, wantReads: 3, wantCode: codes.OK},
		{name: "recreated key past the window is refused", step: 2 * keyCheckReuse, wantReads: 4, wantCode: codes.Unavailable},
	}
	tr := &stubTransit{info: keyInfo(1)}
	p, clk := newTestPlugin(tr)
	p.refresh(ctx)
	base := tr.reads
	for _, s := range steps {
		clk.Step(s.step)
		tr.mu.Lock()
		if s.info != nil {
			tr.info = *s.info
		}
		tr.readErr = s.readErr
		tr.mu.Unlock()
		_, err := p.Encrypt(ctx, "uid", []byte("seed"))
		tr.mu.Lock()
		reads := tr.reads - base
		tr.mu.Unlock()
		if status.Code(err) != s.wantCode || reads != s.wantReads {
			t.Fatalf("%s: encrypt %v (want %s), %d reads by batches (want %d)", s.name, err, s.wantCode, reads, s.wantReads)
		}
	}
}

// TestEncryptRightAfterRotationIsNotRefused: a batch pinned to the version
// the refresher just found must not be judged by an older read that lacks
// it (which would fail every encrypt for a window after each rotation).
func TestEncryptRightAfterRotationIsNotRefused(t *testing.T) {
	ctx := context.Background()
	tr := &stubTransit{info: keyInfo(1)}
	p, clk := newTestPlugin(tr)
	p.refresh(ctx)
	clk.Step(2 * keyCheckReuse)
	if _, err := p.Encrypt(ctx, "uid", []byte("seed")); err != nil { // a batch's own read of version 1
		t.Fatal(err)
	}
	tr.mu.Lock()
	tr.info = keyInfo(2)
	tr.mu.Unlock()
	clk.Step(time.Millisecond)
	p.refresh(ctx)
	enc, err := p.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatalf("encrypt right after the refresher found version 2: %v", err)
	}
	if id, _ := transitkey.ParseKeyID(enc.KeyID); id.Version != 2 {
		t.Fatalf("key_id %q, want version 2", enc.KeyID)
	}
}
