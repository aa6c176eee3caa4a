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
	return checkAudiencesAt("spec.auth.kubernetes.audiences", requested, allowed)
}

// checkAudiencesAt is checkAudiences for the audiences at field.
func checkAudiencesAt(field string, requested, allowed []string) error {
	for i, a := range requested {
		if !slices.Contains(allowed, a) {
			return fmt.Errorf("%s[%d]: %q is not an audience this controller mints tokens for (allowed: %s); remove the field to use the default, or ask the administrator to add it to --allowed-audiences", field, i, a, strings.Join(allowed, ", "))
		}
	}
	return nil
}
