package main

import (
	"strings"
	"testing"
	"time"
)

func TestFlagsFromEnvironment(t *testing.T) {
	env := map[string]string{
		"VAULT_ADDR":                    "https://from-vault-addr:8200",
		"VAULTKMS_VAULT_ADDR":           "https://a:8200,https://b:8200",
		"VAULTKMS_TRANSIT_KEY":          "kms",
		"VAULTKMS_TRANSIT_MOUNT":        "kms-transit",
		"VAULTKMS_VAULT_TIMEOUT":        "2s",
		"VAULTKMS_APPROLE_ROLE_ID_FILE": "/etc/vaultkms/role-id",
		"VAULTKMS_LISTEN":               "unix:///from/env.sock",
	}
	o, err := parseFlags([]string{"--listen=unix:///from/flag.sock"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.vaultAddr != "https://a:8200,https://b:8200" {
		t.Errorf("vault-addr %q: want VAULTKMS_VAULT_ADDR, never $VAULT_ADDR", o.vaultAddr)
	}
	if o.transitKey != "kms" || o.transitMount != "kms-transit" || o.vaultTimeout != 2*time.Second || o.approleRoleIDFile != "/etc/vaultkms/role-id" {
		t.Errorf("environment not applied: %+v", o)
	}
	if o.listen != "unix:///from/flag.sock" {
		t.Errorf("listen %q: a flag on the command line must win over the environment", o.listen)
	}
}

func TestBadEnvironmentValueNamesTheVariable(t *testing.T) {
	_, err := parseFlags(nil, func(k string) string {
		if k == "VAULTKMS_VAULT_TIMEOUT" {
			return "soon"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "VAULTKMS_VAULT_TIMEOUT") {
		t.Fatalf("err = %v, want it to name VAULTKMS_VAULT_TIMEOUT", err)
	}
}

func TestAuthMethodNeedsItsFiles(t *testing.T) {
	cases := map[string]string{
		"token":      "--token-file",
		"approle":    "--approle-role-id-file",
		"cert":       "--client-cert",
		"jwt":        "--jwt-file",
		"kubernetes": "--auth-role",
		"github":     "is not one of",
	}
	for method, want := range cases {
		o := &options{authMethod: method}
		if _, err := o.authMethodFor(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to name %s", method, err, want)
		}
	}
}

func TestDurationsMustBePositive(t *testing.T) {
	for name, tc := range map[string]struct {
		o    options
		want string
	}{
		"defaults":            {options{vaultTimeout: 5 * time.Second, keyRefresh: 10 * time.Second}, ""},
		"no vault timeout":    {options{vaultTimeout: 0, keyRefresh: 10 * time.Second}, "--vault-timeout"},
		"negative timeout":    {options{vaultTimeout: -time.Second, keyRefresh: 10 * time.Second}, "--vault-timeout"},
		"no refresh interval": {options{vaultTimeout: time.Second, keyRefresh: 0}, "--key-refresh-interval"},
	} {
		err := tc.o.checkDurations()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want one naming %q", name, err, tc.want)
		}
	}
}
