package vault

import (
	"strings"
	"testing"
)

func TestMethodConfigNamesTheFlag(t *testing.T) {
	for _, c := range []struct {
		cfg  MethodConfig
		want string
	}{
		{MethodConfig{Method: "token"}, "--auth-method token needs --token-file"},
		{MethodConfig{FlagPrefix: "rotation-", Method: "token"}, "--rotation-auth-method token needs --rotation-token-file"},
		{MethodConfig{FlagPrefix: "rotation-", Method: "approle", RoleIDFile: "r"}, "--rotation-approle-secret-id-file"},
		{MethodConfig{FlagPrefix: "rotation-", Method: "kubernetes"}, "--rotation-auth-role"},
		{MethodConfig{FlagPrefix: "rotation-", Method: "ldap"}, `--rotation-auth-method "ldap"`},
		{MethodConfig{FlagPrefix: "rotation-", Method: "token", TokenFile: "/t"}, ""},
	} {
		m, err := c.cfg.Build()
		switch {
		case c.want == "" && (err != nil || m == nil):
			t.Errorf("%+v: %v", c.cfg, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}
