package vault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want Kind
	}{
		{"sealed", &api.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}}, KindUnavailable},
		{"standby", &api.ResponseError{StatusCode: 472}, KindUnavailable},
		{"rate limited", &api.ResponseError{StatusCode: 429}, KindUnavailable},
		{"internal", &api.ResponseError{StatusCode: 500}, KindUnavailable},
		{"denied", &api.ResponseError{StatusCode: 403, Errors: []string{"permission denied"}}, KindDenied},
		{"bad request", &api.ResponseError{StatusCode: 400}, KindInvalid},
		{"not found", &api.ResponseError{StatusCode: 404}, KindNotFound},
		{"wrapped status", fmt.Errorf("read key: %w", &StatusError{Code: 403}), KindDenied},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, KindUnavailable},
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), KindUnavailable},
		{"other", errors.New("something odd"), KindOther},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Fatalf("Classify = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDescribeKeepsVaultMessageOnly(t *testing.T) {
	err := fmt.Errorf("transit: %w", &api.ResponseError{StatusCode: 503, URL: "https://vault:8200/v1/transit/encrypt/k", Errors: []string{"Vault is sealed"}})
	got := Describe(err)
	if got != "transit: HTTP 503: Vault is sealed" {
		t.Fatalf("Describe = %q", got)
	}
	if d := Describe(&api.ResponseError{StatusCode: 500, RawError: true, Errors: []string{"<html>raw body</html>"}}); strings.Contains(d, "raw body") {
		t.Fatalf("raw response bodies must not be repeated: %q", d)
	}
}

func TestWrapIsSanitizedAndKeepsContext(t *testing.T) {
	raw := &url.Error{Op: "Post", URL: "https://10.0.0.7:8200/v1/auth/approle/login", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}
	err := fmt.Errorf("vault login as ns/sa: %w", Wrap("log in at auth/approle/login", raw))
	if Classify(err) != KindUnavailable {
		t.Fatalf("Classify = %s, want unavailable: a down Vault is not an auth failure", Classify(err))
	}
	for _, s := range []string{err.Error(), Describe(err)} {
		if strings.Contains(s, "10.0.0.7") || strings.Contains(s, "/v1/") {
			t.Fatalf("address leaked: %q", s)
		}
		if !strings.Contains(s, "vault login as ns/sa") || !strings.Contains(s, "connection refused") {
			t.Fatalf("context lost: %q", s)
		}
	}
	var ve *Error
	if !errors.As(err, &ve) || ve.Op != "log in at auth/approle/login" {
		t.Fatalf("no *Error in the chain: %#v", err)
	}
	// Wrapping twice keeps the first *Error.
	again := Wrap("outer", err)
	if !errors.As(again, &ve) || ve.Op != "log in at auth/approle/login" || !strings.HasPrefix(again.Error(), "outer: ") {
		t.Fatalf("rewrap: %v", again)
	}
	if Classify(Wrap("x", &api.ResponseError{StatusCode: 412})) != KindUnavailable {
		t.Fatal("412 (read-after-write consistency) must be retried like unavailable")
	}
}

func TestDescribeSanitizesRawErrorsInContext(t *testing.T) {
	raw := fmt.Errorf("read key: %w", &url.Error{Op: "Get", URL: "https://vault.internal:8200/v1/transit/keys/k", Err: errors.New("x509: certificate signed by unknown authority")})
	d := Describe(raw)
	if strings.Contains(d, "vault.internal") || !strings.HasPrefix(d, "read key: ") {
		t.Fatalf("Describe = %q", d)
	}
}
