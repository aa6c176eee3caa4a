package kmsplugin

import (
	"fmt"
	"time"
)

// healthInputs is everything the plugin's health depends on. Evaluating it
// is a pure function of these facts and the time, so every transition is
// tested without Vault or sleeping.
type healthInputs struct {
	// KeyKnown is true while the plugin has a current key: read from
	// Vault, and its key_id short enough for kube-apiserver.
	KeyKnown bool
	// LastSuccess is the last time Vault answered any request.
	LastSuccess time.Time
	// Failing is true while the latest Vault request failed; FailingSince
	// is when the current run of failures started, FailureReason the last
	// failure's description.
	Failing       bool
	FailingSince  time.Time
	FailureReason string
	// EncryptFailing is true while Vault answers encrypt requests but
	// rejects every item (a key that cannot encrypt, a wrong key type):
	// kube-apiserver must not be told "ok" while no seed can be wrapped.
	EncryptFailing bool
	EncryptFailure string
	// TokenValid, TokenExpiry and TokenReason come from the Vault session.
	TokenValid  bool
	TokenExpiry time.Time
	TokenReason string
}

// healthOK is the exact string kube-apiserver requires for a healthy plugin.
const healthOK = "ok"

// evaluate returns "ok" or the reason the plugin is not healthy. maxSilence
// is how long Vault may go unheard before the plugin stops vouching for it.
func (h healthInputs) evaluate(now time.Time, maxSilence time.Duration) string {
	switch {
	case !h.TokenValid:
		return "vault token not valid: " + orUnknown(h.TokenReason)
	case !h.TokenExpiry.IsZero() && !now.Before(h.TokenExpiry):
		return fmt.Sprintf("vault token expired at %s", h.TokenExpiry.UTC().Format(time.RFC3339))
	case !h.KeyKnown:
		return "transit key not read yet: " + orUnknown(h.FailureReason)
	case h.Failing:
		return fmt.Sprintf("vault failing since %s: %s", h.FailingSince.UTC().Format(time.RFC3339), orUnknown(h.FailureReason))
	case h.EncryptFailing:
		return "vault rejects every encrypt: " + orUnknown(h.EncryptFailure)
	case now.Sub(h.LastSuccess) > maxSilence:
		return fmt.Sprintf("no answer from vault since %s", h.LastSuccess.UTC().Format(time.RFC3339))
	}
	return healthOK
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason recorded"
	}
	return s
}
