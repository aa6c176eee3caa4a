package main

import (
	"slices"
	"strings"
	"testing"
)

func TestAudienceAllowlist(t *testing.T) {
	cases := []struct {
		name, def, flag string
		want            []string
		wantErr         string
	}{
		{"default: only the token audience", "vault", "", []string{"vault"}, ""},
		{"a list", "vault", "vault, vault-eu", []string{"vault", "vault-eu"}, ""},
		{"an empty entry", "vault", "vault,,x", nil, "--allowed-audiences"},
		{"no default audience", "", "", nil, "--token-audience"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := audienceAllowlist(tc.def, tc.flag)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
