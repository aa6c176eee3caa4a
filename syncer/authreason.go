package syncer

import "github.com/vaultkms/vaultkms/internal/vault"

// authFailureReason is the condition reason for a failed login: a Vault
// that could not answer is VaultUnavailable (retrying will fix it), any
// other failure AuthFailed. It decides by the typed Vault error's kind,
// which survives the %w wrapping on the way here.
func authFailureReason(err error) string {
	if vault.Classify(err) == vault.KindUnavailable {
		return ReasonVaultUnavailable
	}
	return ReasonAuthFailed
}
