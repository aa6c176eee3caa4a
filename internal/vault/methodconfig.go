package vault

import (
	"errors"
	"fmt"
)

// MethodConfig is an auth method chosen by flags. FlagPrefix is put before
// each flag name in error messages ("" for the plugin's --auth-method,
// "rotation-" for the auditor's --rotation-auth-method).
type MethodConfig struct {
	FlagPrefix               string
	Method, Mount, Role      string
	TokenFile                string
	RoleIDFile, SecretIDFile string
	ClientCert, ClientKey    string
	JWTFile                  string
}

// Build returns the Method c names, or an error naming the missing flag.
func (c MethodConfig) Build() (Method, error) {
	f := func(name string) string { return "--" + c.FlagPrefix + name }
	switch c.Method {
	case "token":
		if c.TokenFile == "" {
			return nil, fmt.Errorf("%s token needs %s (a token in a flag or manifest would be readable by anyone who can read the manifest)", f("auth-method"), f("token-file"))
		}
		return TokenFile{Path: c.TokenFile}, nil
	case "approle":
		if c.RoleIDFile == "" || c.SecretIDFile == "" {
			return nil, fmt.Errorf("%s approle needs %s and %s", f("auth-method"), f("approle-role-id-file"), f("approle-secret-id-file"))
		}
		return AppRole{Mount: c.Mount, RoleIDFile: c.RoleIDFile, SecretIDFile: c.SecretIDFile}, nil
	case "cert":
		if c.ClientCert == "" || c.ClientKey == "" {
			return nil, fmt.Errorf("%s cert needs %s and %s", f("auth-method"), f("client-cert"), f("client-key"))
		}
		return Cert{Mount: c.Mount, Role: c.Role}, nil
	case "jwt":
		if c.JWTFile == "" || c.Role == "" {
			return nil, fmt.Errorf("%s jwt needs %s and %s", f("auth-method"), f("jwt-file"), f("auth-role"))
		}
		return JWT{Method: "jwt", Mount: c.Mount, Role: c.Role, Token: JWTFile(c.JWTFile)}, nil
	case "kubernetes":
		if c.Role == "" {
			return nil, fmt.Errorf("%s kubernetes needs %s", f("auth-method"), f("auth-role"))
		}
		p := c.JWTFile
		if p == "" {
			p = DefaultServiceAccountTokenFile
		}
		return JWT{Method: "kubernetes", Mount: c.Mount, Role: c.Role, Token: JWTFile(p)}, nil
	case "":
		return nil, errors.New(f("auth-method") + " is required")
	}
	return nil, fmt.Errorf("%s %q is not one of token, approle, cert, jwt, kubernetes", f("auth-method"), c.Method)
}
