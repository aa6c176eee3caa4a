package syncer

import (
	"fmt"
	"slices"
	"strings"
)

// checkAudiences refuses audiences the administrator did not allow. The
// controller mints service account tokens for whatever audience a
// VaultSecret names and sends them to Vault: without this list a tenant
// could have it mint tokens the API server itself (or any other service)
// accepts, and hand them to Vault.
func checkAudiences(requested, allowed []string) error {
	for i, a := range requested {
		if !slices.Contains(allowed, a) {
			return fmt.Errorf("spec.auth.kubernetes.audiences[%d]: %q is not an audience this controller mints tokens for (allowed: %s); remove the field to use the default, or ask the administrator to add it to --allowed-audiences", i, a, strings.Join(allowed, ", "))
		}
	}
	return nil
}
