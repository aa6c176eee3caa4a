package syncer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vaultkms/internal/vault"
)

func TestAuthFailureReason(t *testing.T) {
	down := &url.Error{Op: "Post", URL: "https://vault:8200/v1/auth/kubernetes/login", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}
	cases := map[string]struct {
		err  error
		want string
	}{
		"vault down at login": {fmt.Errorf("vault login as ns/sa with role %q: %w", "r", vault.Wrap("log in at auth/kubernetes/login", down)), ReasonVaultUnavailable},
		"role refused":        {fmt.Errorf("vault login: %w", vault.Wrap("log in", &api.ResponseError{StatusCode: 400, Errors: []string{"invalid role"}})), ReasonAuthFailed},
		"token request":       {errors.New("request a token for service account ns/sa: forbidden"), ReasonAuthFailed},
	}
	for name, tc := range cases {
		if got := authFailureReason(tc.err); got != tc.want {
			t.Errorf("%s: reason %s, want %s", name, got, tc.want)
		}
	}
}
