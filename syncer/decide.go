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
	// TokenAccessor is the accessor of the tenant token the controller
	// holds for this VaultSecret (empty when it holds none); a lease made
	// by that token is renewable with it. TokenExpires is that token's end
	// as known now.
	TokenAccessor string
	TokenExpires  time.Time
	// SourceHash and MetadataHash are those of the spec as it is now.
	SourceHash, MetadataHash string
	// Nudge tells that the source hash moved since this process's last
	// pass without the generation moving (a VaultAuth edited or created, a
	// new force-sync value): new inputs are tried at once, not at the
	// back-off of a failure with the old ones.
	Nudge bool
	// Unrecorded is a write of this controller the Secret holds and
	// status does not (its status write was lost), with the HMAC of the
	// Secret's data, DataHMAC: the pass records it, reading nothing.
	Unrecorded *WriteRecord
	DataHMAC   string
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
	// LeaseID is the Secret's lease-id annotation: the lease whose
	// credentials it holds, or for spec.sources the current lease of each
	// dynamic source, comma-separated; empty when none.
	LeaseID string
	// ExpiresAt is the Secret's expires-at annotation.
	ExpiresAt string
}

// holds tells whether the Secret holds lease id (nil holds nothing).
func (s *corev1Secret) holds(id string) bool { return s != nil && holdsLease(s.LeaseID, id) }

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
	// pki) and write the Secret. For spec.sources: read the sources whose
	// SourcePlan says Read, renew those that say Renew, write once.
	ActFetch
	// ActRenew: renew the current lease and move the Secret's expiry. For
	// spec.sources: renew the leases whose SourcePlan says Renew; nothing
	// is read.
	ActRenew
	// ActWriteMetadata: rewrite the Secret's labels and annotations with
	// its current data; no Vault call.
	ActWriteMetadata
)

var actionNames = [...]string{"wait", "invalid", "conflict", "fetch", "renew", "write-metadata"}

func (a Action) String() string { return actionNames[a] }

// JournalPlan is what a pass does to one lease journal before anything
// else: the same rules for spec.source's journal and for each of
// spec.sources'.
type JournalPlan struct {
	// Promote: the Secret holds the pending lease; it becomes current and
	// the one it replaces is scheduled for revocation.
	Promote bool
	// DropPending: the pending lease never reached the Secret (read from
	// the API server); nobody holds it, so it is revoked at once.
	DropPending bool
	// ReleaseStale: the source no longer holds leases (dynamic changed to
	// kv or pki, or removed from spec.sources); every lease in the journal
	// is revoked.
	ReleaseStale bool
	// Previous is what to do with a replaced lease.
	Previous PreviousAction
}

// busy tells whether carrying out the journal plan calls Vault.
func (j JournalPlan) busy() bool {
	return j.Promote || j.DropPending || j.ReleaseStale || j.Previous == PreviousRevoke
}

// SourcePlan is what a pass does with one of spec.sources (or, past the
// end of spec.sources, with the journal of a source since removed).
type SourcePlan struct {
	JournalPlan
	// Read: read this source (issue new credentials for dynamic and pki).
	Read bool
	// Renew: renew its current lease, keeping its credentials.
	Renew bool
}

// Plan is what a pass does, decided from Observed and the time alone.
type Plan struct {
	Action Action
	// Why says what made the action due, for logs.
	Why string
	// JournalPlan is for the journal of spec.source (for spec.sources it
	// only ever releases leases left from before a switch).
	JournalPlan
	// Sources is the plan of each of status.sources' journals and, for
	// spec.sources, of each source: index i is spec.sources[i].
	Sources []SourcePlan
	// Restore: the Secret was edited by hand; Fetch restores it.
	Restore bool
	// AllSources: a fetch of spec.sources reads every source, not only
	// those due (no Secret, a spec change, a hand edit, an adoption).
	AllSources bool
	// RecordWrite: status takes Observed.Unrecorded, the write the
	// Secret holds, as its own; the rest of the plan is decided on status
	// as it then is.
	RecordWrite bool
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

// passFacts are what Decide works out once, for either form of the spec.
type passFacts struct {
	// failing: Ready=False for this generation by a failed pass.
	failing bool
	// backingOff: failing and the retry time not reached (nor nudged).
	backingOff bool
	retryAt    time.Time
	// sourceChanged: what decides the data changed since last applied.
	sourceChanged bool
	// metaChanged: labels, annotations or the expiry the Secret carries
	// differ from what status records.
	metaChanged bool
}

func factsOf(o Observed, now time.Time) passFacts {
	vs := o.VS
	st := vs.Status
	var c passFacts
	ready := meta.FindStatusCondition(st.Conditions, "Ready")
	// SecretMissing is written while a pass waits for its turn, not by a
	// failed one: it sets no back-off.
	c.failing = !FailingSince(ready, vs.Generation).IsZero() && ready.Reason != ReasonSecretMissing
	c.retryAt = timeOf(st.RefreshAt)
	c.backingOff = c.failing && now.Before(c.retryAt) && !o.Nudge
	c.sourceChanged = st.SourceHash != o.SourceHash
	if st.SourceHash == "" && st.AppliedGeneration == 0 {
		// Written before hashes were recorded: the generation tells.
		c.sourceChanged = st.ObservedGeneration != vs.Generation
	}
	if c.failing && o.Invalid == nil && unusableInputs[ready.Reason] {
		// The VaultAuth or connection that made the last pass fail is
		// usable again: what the spec now names was never applied, even
		// when it hashes as at the last sync (the same VaultAuth applied
		// again). Its back-off was for the missing input, not for Vault.
		c.sourceChanged, c.backingOff = true, false
	}
	c.metaChanged = st.MetadataHash != o.MetadataHash
	if o.Secret != nil && st.ExpiresAt != nil && o.Secret.ExpiresAt != formatTime(st.ExpiresAt.Time) {
		// A renewal whose expiry did not reach the Secret: the Expirer
		// would delete a Secret whose credentials still work.
		c.metaChanged = true
	}
	return c
}

// unusableInputs are the Ready reasons only the observation sets, before
// any Vault call (Observed.Invalid), for an input outside the spec: they
// end when the observation no longer finds them.
var unusableInputs = map[string]bool{
	ReasonAuthNotFound: true, ReasonConnectionNotFound: true, ReasonConnectionNotAllowed: true, ReasonConnectionInvalid: true,
}

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
		p.Sources = make([]SourcePlan, len(st.Sources))
		for i := range st.Sources {
			p.Sources[i].Previous = previousAction(st.Sources[i].Lease, now)
		}
		p.WakeAt = earliestRevokePrevious(&st)
		return p
	}
	if o.Secret != nil && !o.Secret.Owned && !o.Secret.Adoptable {
		p.Action, p.Why, p.WakeAt = ActConflict, "Secret not managed by this VaultSecret", now.Add(conflictRetry)
		return p
	}
	if o.Unrecorded != nil {
		return decideRecorded(o, now)
	}
	c := factsOf(o, now)
	if len(vs.Spec.Sources) > 0 {
		return decideSources(o, c, now)
	}
	leased := o.Kind == "dynamic"

	// The lease journal first: what the Secret holds decides what is
	// current. Journals of spec.sources left from before a switch to
	// spec.source no longer lease.
	var cur *v1alpha1.Lease
	p.JournalPlan, cur = decideJournal(st.LeaseJournal, leased, o, now)
	p.Sources = make([]SourcePlan, len(st.Sources))
	for i := range st.Sources {
		p.Sources[i].JournalPlan, _ = decideJournal(st.Sources[i].LeaseJournal, false, o, now)
	}

	kvRefreshAt := timeOf(st.RefreshAt)
	if o.Kind == "kv" {
		kvRefreshAt = kvRefreshFrom(vs, kvRefreshAt, st.LastSyncTime, c.failing)
	}
	fetch := func(why string) {
		p.Action, p.Why = ActFetch, why
		if c.backingOff {
			p.Action, p.WakeAt = ActWait, c.retryAt
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
	case c.sourceChanged:
		p.AllSources = true
		fetch("spec changed")
	case p.DropPending:
		fetch("new credentials never reached the Secret")
	case o.Data == DataEdited && !p.Promote:
		// (Data the promoted lease's write put there is not an edit.)
		if wait := RestoreBackoff(o.Restores, now.Sub(o.LastRestore)); wait > 0 {
			p.Action, p.Why, p.WakeAt = ActWait, "edited by hand; restore rate-limited", now.Add(wait)
			break
		}
		p.Restore, p.AllSources = true, true
		fetch("edited by hand")
	case leased && cur == nil:
		fetch("no lease recorded")
	case leased:
		action, at := leaseDue(o, cur, st.LastSyncTime, p.Promote, now)
		switch {
		case action == LeaseRenew && c.backingOff:
			p.Action, p.WakeAt = ActWait, c.retryAt
		case action == LeaseRenew:
			p.Action, p.Why = ActRenew, "lease due for renewal"
		case action == LeaseReissue:
			fetch("lease cannot reach the wanted lifetime")
		case c.metaChanged:
			p.Action, p.Why, p.WakeAt = ActWriteMetadata, "metadata changed", at
		default:
			p.WakeAt = at
		}
	case st.RefreshAt == nil || !now.Before(kvRefreshAt):
		fetch("refresh due")
	case c.metaChanged:
		p.Action, p.Why = ActWriteMetadata, "metadata changed"
	}
	var refresh time.Time
	if !leased {
		refresh = kvRefreshAt
	}
	p.finish(o, c, p.Promote, refresh, revokePreviousAt(cur))
	return p
}

// decideRecorded decides on status as it is once the write the Secret
// holds is recorded: that write was this controller's, so it is neither
// an edit to restore nor a spec change to apply.
func decideRecorded(o Observed, now time.Time) Plan {
	vs := o.VS.DeepCopy()
	o.Unrecorded.restore(&vs.Status, o.DataHMAC, targetName(vs), vs.Generation)
	rest := o
	rest.VS, rest.Unrecorded, rest.Data = vs, nil, DataUnchanged
	p := Decide(rest, now)
	p.RecordWrite = true
	return p
}

// finish sets what every plan gets the same way: adopting the HMAC of
// data that is the controller's own, marking a cosmetic spec change
// applied, and for a plan that waits, when to wake.
func (p *Plan) finish(o Observed, c passFacts, promotedAny bool, wakes ...time.Time) {
	vs := o.VS
	st := vs.Status
	// Data under another HMAC key, or written by the pass whose lease was
	// just promoted, is taken as it is: no re-read, no restart.
	if (o.Data == DataOtherKey || (o.Data == DataEdited && promotedAny)) && p.Action != ActFetch {
		p.AdoptHMAC = true
	}
	if p.Action == ActWait || p.Action == ActWriteMetadata {
		p.MarkApplied = !c.sourceChanged && st.AppliedGeneration != vs.Generation && st.AppliedGeneration != 0
		p.WakeAt = NextWake(append(wakes, p.WakeAt, timeOf(st.ExpiresAt))...)
	}
}

// kvRefreshFrom is when a kv source is read next: refreshAt as planned,
// but a shortened spec.refreshInterval takes effect from the last read,
// not after the refresh planned under the old one (which may be weeks
// away). A failing VaultSecret keeps its back-off.
func kvRefreshFrom(vs *v1alpha1.VaultSecret, refreshAt time.Time, lastRead *metav1.Time, failing bool) time.Time {
	if iv := refreshInterval(vs); iv > 0 && !failing && lastRead != nil {
		if at, _ := KVPlan(lastRead.Time, wantedTTL(vs), iv, jitterFor(string(vs.UID))); at.Before(refreshAt) {
			return at
		}
	}
	return refreshAt
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
