package vault

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	if got != "HTTP 503: Vault is sealed" {
		t.Fatalf("Describe = %q", got)
	}
	if d := Describe(&api.ResponseError{StatusCode: 500, RawError: true, Errors: []string{"<html>raw body</html>"}}); strings.Contains(d, "raw body") {
		t.Fatalf("raw response bodies must not be repeated: %q", d)
	}
}
