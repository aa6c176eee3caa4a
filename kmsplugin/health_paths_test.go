package kmsplugin

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vaultkms/vaultkms/internal/vault"
)

// TestRequestFailuresMakeStatusUnhealthy: whatever Vault (or something
// between) answered, a failed Encrypt request leaves Status unhealthy,
// with a reason, through the next key refresh, until the path works again.
func TestRequestFailuresMakeStatusUnhealthy(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		reason string
	}{
		{"a redirect not followed", vault.Wrap("transit encrypt", &vault.TargetError{Host: "evil.example:8200", Reason: "vault redirected there (HTTP 307)"}), "evil.example"},
		{"wrong result count", &vault.Error{Kind: vault.KindUnavailable, Op: "transit encrypt", Detail: "vault's answer is unusable: 1 results for 2 items"}, "1 results for 2 items"},
		{"405", vault.Wrap("transit encrypt", &vault.StatusError{Code: 405, Errors: []string{"unsupported operation"}}), "405"},
		{"413", vault.Wrap("transit encrypt", &vault.StatusError{Code: 413, Errors: []string{"request too large"}}), "413"},
		{"decode failure", &vault.Error{Kind: vault.KindUnavailable, Op: "transit encrypt", Detail: "vault's answer is unusable: not the expected JSON"}, "not the expected JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tr := &stubTransit{info: keyInfo(1)}
			p, _ := newTestPlugin(tr)
			p.refresh(ctx)
			tr.mu.Lock()
			tr.encErr = tc.err
			tr.mu.Unlock()
			if _, err := p.Encrypt(ctx, "uid", []byte("seed")); err == nil {
				t.Fatal("Encrypt succeeded")
			}
			p.refresh(ctx) // the key read succeeds; Encrypt's path still fails
			st, _ := p.Status(ctx)
			if st.Healthz == healthOK || !strings.Contains(st.Healthz, tc.reason) {
				t.Fatalf("healthz %q, want a reason naming %q", st.Healthz, tc.reason)
			}
			tr.mu.Lock()
			tr.encErr = nil
			tr.mu.Unlock()
			p.refresh(ctx) // the refresher's probe proves the path again
			if st, _ := p.Status(ctx); st.Healthz != healthOK {
				t.Fatalf("healthz after the path works again: %q", st.Healthz)
			}
		})
	}
}

// TestEncryptIsProven: a ciphertext that does not decrypt to the seed sent
// (a stale or foreign answer) is never returned and makes Status
// unhealthy; a proof that cannot be made is an error too.
func TestEncryptIsProven(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		mutate func(*stubTransit)
		code   codes.Code
		health string
	}{
		{"a ciphertext of another seed", func(s *stubTransit) { s.wrapOther = true }, codes.Internal, "does not decrypt to the seed"},
		{"the proof's decrypt fails", func(s *stubTransit) {
			s.decErr = &vault.Error{Kind: vault.KindUnavailable, Op: "transit decrypt", Detail: "vault's answer is unusable: no decrypted value in it"}
		}, codes.Unavailable, "no decrypted value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := &stubTransit{info: keyInfo(1)}
			p, _ := newTestPlugin(tr)
			p.refresh(ctx)
			tr.mu.Lock()
			tc.mutate(tr)
			tr.mu.Unlock()
			resp, err := p.Encrypt(ctx, "uid", []byte("s3cr3t-seed-bytes"))
			if resp != nil || status.Code(err) != tc.code {
				t.Fatalf("Encrypt = %v, %v; want no answer and %s", resp, err, tc.code)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error %q holds the seed", err)
			}
			if st, _ := p.Status(ctx); st.Healthz == healthOK || !strings.Contains(st.Healthz, tc.health) {
				t.Fatalf("healthz %q, want a reason naming %q", st.Healthz, tc.health)
			}
		})
	}
}

// TestCallerMistakesDoNotFlipHealth: a caller that gives up, or sends an
// empty plaintext, gets an error; Status stays ok.
func TestCallerMistakesDoNotFlipHealth(t *testing.T) {
	ctx := context.Background()
	t.Run("empty plaintext", func(t *testing.T) {
		tr := &stubTransit{info: keyInfo(1)}
		p, _ := newTestPlugin(tr)
		p.refresh(ctx)
		_, err := p.Encrypt(ctx, "uid", nil)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("Encrypt(empty) = %v, want InvalidArgument naming the empty plaintext", err)
		}
		if len(tr.asked) != 0 {
			t.Fatal("an empty plaintext was sent to Vault")
		}
		if st, _ := p.Status(ctx); st.Healthz != healthOK {
			t.Fatalf("healthz %q", st.Healthz)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		tr := &stubTransit{info: keyInfo(1), blockEncrypt: true}
		p, _ := newTestPlugin(tr)
		p.refresh(ctx)
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(20*time.Millisecond, cancel)
		if _, err := p.Encrypt(cctx, "uid", []byte("seed")); err == nil {
			t.Fatal("a cancelled Encrypt succeeded")
		}
		if st, _ := p.Status(ctx); st.Healthz != healthOK {
			t.Fatalf("healthz after the caller's own cancellation: %q", st.Healthz)
		}
	})
}

// TestBatchWithTooFewResultsFailsEveryCall: no call gets a zero value for
// an answer.
func TestBatchWithTooFewResultsFailsEveryCall(t *testing.T) {
	b := newBatcher(8, 1, func(_ context.Context, in []int) ([]int, []error, error) {
		return []int{}, []error{}, nil
	})
	_, err := b.Submit(context.Background(), 1)
	if !errors.Is(err, errResultCount) {
		t.Fatalf("Submit = %v, want errResultCount", err)
	}
}
