package syncer

import (
	"fmt"
	"strings"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// reservedMounts are the first segments of Vault's own endpoints, where no
// secrets engine lives: auth/ answers for tokens (a GET of
// auth/token/lookup-self returns the caller's own token, which would land
// in the tenant's Secret) and sys/ for leases, policies and wrapping. Vault
// matches paths case-sensitively; they are refused in any case anyway, so
// that no spelling is left to argue about.
var reservedMounts = []string{"auth", "sys"}

// checkVaultPaths refuses a source whose request would leave the secrets
// engine it names. The CRD refuses the same at admission; this check runs
// before any Vault call, for objects admitted before the rule existed or
// by an API server without it.
func checkVaultPaths(src v1alpha1.Source) error { return checkSourcePath("spec.source", src) }

// checkSourcePath checks one source, field naming it in errors.
func checkSourcePath(field string, src v1alpha1.Source) error {
	switch {
	case src.KV != nil:
		return checkRequestPath(field+".kv", "path", src.KV.Mount, src.KV.Path)
	case src.Dynamic != nil:
		return checkRequestPath(field+".dynamic", "path", src.Dynamic.Mount, src.Dynamic.Path)
	case src.PKI != nil:
		return checkRequestPath(field+".pki", "role", src.PKI.Mount, src.PKI.Role)
	}
	return nil
}

// checkRequestPath checks a mount and the path joined to it. Slashes are
// normalised the way the request is built (leading and trailing ones of
// the mount are trimmed), so "/auth/token" is seen as "auth/token".
func checkRequestPath(field, pathField, mount, path string) error {
	m := strings.Trim(mount, "/")
	segs := strings.Split(m, "/")
	for _, r := range reservedMounts {
		if strings.EqualFold(segs[0], r) {
			return fmt.Errorf("%s.mount: %q is under %s/, one of Vault's own endpoints and not a secrets engine (a read there can return the tenant's own token); name the mount of a secrets engine, such as secret", field, mount, r)
		}
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return fmt.Errorf("%s.mount: %q has an empty, '.' or '..' segment; name the mount as Vault lists it, such as secret or team/kv", field, mount)
		}
	}
	if strings.HasPrefix(path, "/") {
		return fmt.Errorf("%s.%s: %q starts with '/'; it is relative to the mount", field, pathField, path)
	}
	for _, s := range strings.Split(path, "/") {
		if s == "." || s == ".." {
			return fmt.Errorf("%s.%s: %q has a '.' or '..' segment, which would leave the mount; name the secret below the mount", field, pathField, path)
		}
	}
	return nil
}
