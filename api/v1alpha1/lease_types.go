package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LeaseJournal holds every lease Vault issued for one dynamic source: the
// pending lease (issued, not yet seen in the Secret), the current one (the
// Secret holds it) and, in the current one, the lease it replaced (revoked
// after revokeGracePeriod). A lease becomes current only once the Secret
// is read back holding it.
type LeaseJournal struct {
	// PendingLease is a lease issued but not yet seen in the Secret: it
	// becomes the current lease only once the Secret is read back holding
	// it, and is revoked if the Secret never does.
	// +optional
	PendingLease *Lease `json:"pendingLease,omitempty"`
	// Lease is the current lease of a dynamic source, the one the Secret
	// holds (its id is not a secret).
	// +optional
	Lease *Lease `json:"lease,omitempty"`
	// RevokeFailures counts failed revocations of a replaced lease, for
	// back-off.
	// +optional
	RevokeFailures int32 `json:"revokeFailures,omitempty"`
}

// Lease describes a Vault lease.
type Lease struct {
	ID string `json:"id"`
	// IssuedAt is when the credentials were issued.
	IssuedAt metav1.Time `json:"issuedAt"`
	// ExpiresAt is when the lease ends unless renewed.
	ExpiresAt metav1.Time `json:"expiresAt"`
	// TokenAccessor is the accessor (never the token) of the tenant token
	// that created the lease: Vault revokes the lease when that token
	// ends.
	// +optional
	TokenAccessor string `json:"tokenAccessor,omitempty"`
	// TokenExpiresAt is when that token ends as last known; the lease's
	// effective end is the earlier of ExpiresAt and this.
	// +optional
	TokenExpiresAt *metav1.Time `json:"tokenExpiresAt,omitempty"`
	// Renewable tells whether Vault allows renewal.
	Renewable bool `json:"renewable"`
	// Vault names the Vault that issued the lease: its cluster ID (from
	// sys/health, the same on every node of a cluster), and the Vault
	// namespace after a '/'. The lease is renewed and revoked only there:
	// once its connection (or --vault-addr) reaches another Vault, it is
	// never sent to that one and ends on its own. Empty for a lease
	// recorded before this field, or when Vault did not say.
	// +optional
	Vault string `json:"vault,omitempty"`
	// Previous is a replaced lease awaiting revocation.
	// +optional
	PreviousID string `json:"previousID,omitempty"`
	// PreviousVault is the Vault of the replaced lease (see Vault).
	// +optional
	PreviousVault string `json:"previousVault,omitempty"`
	// +optional
	RevokePreviousAt *metav1.Time `json:"revokePreviousAt,omitempty"`
	// PreviousExpiresAt is the replaced lease's effective end: it is not
	// revoked after that, since Vault already has.
	// +optional
	PreviousExpiresAt *metav1.Time `json:"previousExpiresAt,omitempty"`
}
