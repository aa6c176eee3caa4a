package syncer

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// DataState is what the Secret's data says against the status HMAC.
type DataState int

const (
	// DataUnchanged: the data is what the controller wrote (or there is
	// no Secret, or nothing recorded to compare with).
	DataUnchanged DataState = iota
	// DataEdited: someone else changed the data.
	DataEdited
	// DataOtherKey: the status HMAC was made with another HMAC key (the
	// key Secret was recreated); nothing can be said about the data, so it
	// is taken as it is rather than treated as edited.
	DataOtherKey
)

// Observed is everything one pass decides on, read in one place.
type Observed struct {
	VS *v1alpha1.VaultSecret
	// Kind is the source's kind: "kv", "dynamic" or "pki".
	Kind string
	// Invalid is the first problem of the spec found without Vault.
	Invalid error
	// Secret is the target Secret, nil when absent.
	Secret *corev1Secret
	// Confirmed tells that Secret (or its absence) was read from the API
	// server, not the cache.
	Confirmed bool
	Data      DataState
	// TokenLive tells that the controller holds the token that created
	// the current lease; TokenExpires is that token's end as known now.
	TokenLive    bool
	TokenExpires time.Time
	// SourceHash and MetadataHash are those of the spec as it is now.
	SourceHash, MetadataHash string
	// Nudge tells that the source hash moved since this process's last
	// pass without the generation moving (a VaultAuth edited or created, a
	// new force-sync value): new inputs are tried at once, not at the
	// back-off of a failure with the old ones.
	Nudge bool
	// Restores and LastRestore count recent restores of a hand-edited
	// Secret, so an edit loop is slowed down instead of issuing a lease
	// per edit.
	Restores    int
	LastRestore time.Time
}

// corev1Secret is the part of the Secret the decision reads.
type corev1Secret struct {
	Owned bool
	// Adoptable: not owned, but spec.target.adopt asks to take it over
	// and no VaultSecret controls it.
	Adoptable bool
	// LeaseID is the lease whose credentials the Secret holds (its
	// lease-id annotation), empty for kv and pki.
	LeaseID string
	// ExpiresAt is the Secret's expires-at annotation.
	ExpiresAt string
}

// Action is the one write a pass does to Vault and the Secret.
type Action int

const (
	// ActWait: nothing due before Plan.WakeAt.
	ActWait Action = iota
	// ActInvalid: report the spec's problem; nothing reaches Vault.
	ActInvalid
	// ActConflict: a Secret of that name belongs to someone else.
	ActConflict
	// ActFetch: read the source (issue new credentials for dynamic and
	// pki) and write the Secret.
	ActFetch
	// ActRenew: renew the current lease and move the Secret's expiry.
	ActRenew
	// ActWriteMetadata: rewrite the Secret's labels and annotations with
	// its current data; no Vault call.
	ActWriteMetadata
)

var actionNames = [...]string{"wait", "invalid", "conflict", "fetch", "renew", "write-metadata"}

func (a Action) String() string { return actionNames[a] }

// Plan is what a pass does, decided from Observed and the time alone.
type Plan struct {
	Action Action
	// Why says what made the action due, for logs.
	Why string
	// Promote: the Secret holds the pending lease; it becomes current and
	// the one it replaces is scheduled for revocation.
	Promote bool
	// DropPending: the pending lease never reached the Secret (read from
	// the API server); nobody holds it, so it is revoked at once.
	DropPending bool
	// ReleaseStale: the source no longer holds leases (dynamic changed to
	// kv or pki); every lease in the journal is revoked.
	ReleaseStale bool
	// Previous is what to do with a replaced lease.
	Previous PreviousAction
	// Restore: the Secret was edited by hand; Fetch restores it.
	Restore bool
	// AllSources: a fetch of spec.sources reads every source, not only
	// those due (no Secret, a spec change, a hand edit, an adoption).
	AllSources bool
	// AdoptHMAC: the status HMAC is of another key; record the data's HMAC
	// under the current key.
	AdoptHMAC bool
	// MarkApplied: the spec changed only in what needs no write (rollout
	// targets, grace period, revokeOnDelete, expiryPolicy).
	MarkApplied bool
	// WakeAt is when to look again, zero for "on the next event".
	WakeAt time.Time
}

// Tunables of the decisions.
const (
	// restoreResetAfter forgets earlier restores: an edit after this long
	// is restored at once.
	restoreResetAfter = 10 * time.Minute
	// conflictRetry is how often a Secret owned by someone else is looked
	// at again.
	conflictRetry = time.Minute
)

// Decide is the lifetime rules: what one pass does, given what was
// observed and the time. It has no I/O; the reconciler carries it out.
func Decide(o Observed, now time.Time) Plan {
	vs := o.VS
	st := vs.Status
	var p Plan
	if o.Invalid != nil {
		p.Action, p.Why = ActInvalid, "invalid spec"
		// Leases held are still kept alive or revoked when replaced.
		p.Previous = previousAction(st.Lease, now)
		p.WakeAt = NextWake(revokePreviousAt(st.Lease))
		return p
	}
	if o.Secret != nil && !o.Secret.Owned && !o.Secret.Adoptable {
		p.Action, p.Why, p.WakeAt = ActConflict, "Secret not managed by this VaultSecret", now.Add(conflictRetry)
		return p
	}
	leased := o.Kind == "dynamic"

	// The lease journal first: what the Secret holds decides what is
	// current.
	cur := st.Lease
	if !leased && (st.Lease != nil || st.PendingLease != nil) {
		p.ReleaseStale = true
		cur = nil
	}
	if leased && st.PendingLease != nil {
		switch {
		case o.Secret != nil && o.Secret.LeaseID == st.PendingLease.ID:
			p.Promote = true
			cur = promoted(st, now, vs.Spec.RevokeGracePeriod)
		case o.Confirmed:
			p.DropPending = true
		}
	}
	if !p.ReleaseStale {
		p.Previous = previousAction(cur, now)
	}

	ready := meta.FindStatusCondition(st.Conditions, "Ready")
	// SecretMissing is written while a pass waits for its turn, not by a
	// failed one: it sets no back-off.
	failing := !FailingSince(ready, vs.Generation).IsZero() && ready.Reason != ReasonSecretMissing
	retryAt := timeOf(st.RefreshAt)
	backingOff := failing && now.Before(retryAt) && !o.Nudge
	sourceChanged := st.SourceHash != o.SourceHash
	if st.SourceHash == "" && st.AppliedGeneration == 0 {
		// Written before hashes were recorded: the generation tells.
		sourceChanged = st.ObservedGeneration != vs.Generation
	}
	metaChanged := st.MetadataHash != o.MetadataHash
	if o.Secret != nil && st.ExpiresAt != nil && o.Secret.ExpiresAt != formatTime(st.ExpiresAt.Time) {
		// A renewal whose expiry did not reach the Secret: the Expirer
		// would delete a Secret whose credentials still work.
		metaChanged = true
	}

	// A shortened spec.refreshInterval takes effect from the last read,
	// not after the refresh planned under the old one (which may be
	// weeks away). A failing VaultSecret keeps its back-off.
	kvRefreshAt := timeOf(st.RefreshAt)
	if iv := refreshInterval(vs); iv > 0 && !leased && !failing && st.LastSyncTime != nil && o.Kind == "kv" {
		if at, _ := KVPlan(st.LastSyncTime.Time, wantedTTL(vs), iv, jitterFor(string(vs.UID))); at.Before(kvRefreshAt) {
			kvRefreshAt = at
		}
	}
	fetch := func(why string) {
		p.Action, p.Why = ActFetch, why
		if backingOff {
			p.Action, p.WakeAt = ActWait, retryAt
		}
	}
	switch {
	case o.Secret == nil:
		p.AllSources = true
		fetch("no Secret")
	case !o.Secret.Owned:
		// Adoptable (others were refused above): written over in one
		// update, so the application never sees it missing.
		p.AllSources = true
		fetch("adopting an existing Secret (spec.target.adopt)")
	case sourceChanged:
		p.AllSources = true
		fetch("spec changed")
	case p.DropPending:
		fetch("new credentials never reached the Secret")
	case o.Data == DataEdited:
		if wait := RestoreBackoff(o.Restores, now.Sub(o.LastRestore)); wait > 0 {
			p.Action, p.Why, p.WakeAt = ActWait, "edited by hand; restore rate-limited", now.Add(wait)
			break
		}
		p.Restore, p.AllSources = true, true
		fetch("edited by hand")
	case leased && cur == nil:
		fetch("no lease recorded")
	case leased:
		l := cur
		tokenEnd := timeOf(l.TokenExpiresAt)
		if o.TokenLive && !o.TokenExpires.IsZero() {
			tokenEnd = o.TokenExpires
		}
		renewedAt := l.IssuedAt.Time
		if st.LastSyncTime != nil && st.LastSyncTime.After(renewedAt) && !p.Promote {
			renewedAt = st.LastSyncTime.Time
		}
		action, at := DecideLease(now, LeaseFacts{IssuedAt: l.IssuedAt.Time, RenewedAt: renewedAt, ExpiresAt: l.ExpiresAt.Time,
			TokenExpiresAt: tokenEnd, TokenLive: o.TokenLive, TokenUnknown: l.TokenAccessor == "", Renewable: l.Renewable,
			Wanted: wantedTTL(vs)}, jitterFor(string(vs.UID)))
		switch {
		case action == LeaseRenew && backingOff:
			p.Action, p.WakeAt = ActWait, retryAt
		case action == LeaseRenew:
			p.Action, p.Why = ActRenew, "lease due for renewal"
		case action == LeaseReissue:
			fetch("lease cannot reach the wanted lifetime")
		case metaChanged:
			p.Action, p.Why, p.WakeAt = ActWriteMetadata, "metadata changed", at
		default:
			p.WakeAt = at
		}
	case st.RefreshAt == nil || !now.Before(kvRefreshAt):
		fetch("refresh due")
	case metaChanged:
		p.Action, p.Why = ActWriteMetadata, "metadata changed"
	}
	if o.Data == DataOtherKey && p.Action != ActFetch {
		p.AdoptHMAC = true
	}
	if p.Action == ActWait || p.Action == ActWriteMetadata {
		p.MarkApplied = !sourceChanged && st.AppliedGeneration != vs.Generation && st.AppliedGeneration != 0
	}
	if p.Action == ActWait || p.Action == ActWriteMetadata {
		var expires time.Time
		if st.ExpiresAt != nil {
			expires = st.ExpiresAt.Time
		}
		var refresh time.Time
		if !leased {
			refresh = kvRefreshAt
		}
		p.WakeAt = NextWake(p.WakeAt, refresh, expires, revokePreviousAt(cur))
	}
	return p
}

// RestoreBackoff is how long after the last restore of a hand-edited
// Secret the next one may happen: none for the first, then 5 s doubling
// to 5 min; restores more than restoreResetAfter apart start afresh.
func RestoreBackoff(restores int, sinceLast time.Duration) time.Duration {
	if restores == 0 || sinceLast >= restoreResetAfter {
		return 0
	}
	wait := RevokeBackoff(int32(restores))
	if sinceLast >= wait {
		return 0
	}
	return wait - sinceLast
}

// previousAction is what to do with the replaced lease of l now.
func previousAction(l *v1alpha1.Lease, now time.Time) PreviousAction {
	if l == nil || l.PreviousID == "" {
		return PreviousWait
	}
	return DecidePrevious(now, timeOf(l.RevokePreviousAt), timeOf(l.PreviousExpiresAt))
}

func revokePreviousAt(l *v1alpha1.Lease) time.Time {
	if l == nil || l.PreviousID == "" {
		return time.Time{}
	}
	return timeOf(l.RevokePreviousAt)
}

// FailureReason is the Ready reason and message for a failed pass: past
// the Secret's expiry the failure is reported as Expired, saying whether
// the Secret was deleted (expiryPolicy Delete) or keeps its last data
// (Retain).
func FailureReason(now time.Time, expiresAt time.Time, retain bool, reason, msg string) (string, string) {
	if !Expired(now, expiresAt) {
		return reason, msg
	}
	what := "Secret deleted at expiry"
	if retain {
		what = "Secret kept with its last data past its expiry (expiryPolicy Retain)"
	}
	return ReasonExpired, what + " (" + formatTime(expiresAt) + "); refresh keeps failing: " + reason + ": " + msg
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

func ptrTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t)
	return &mt
}
