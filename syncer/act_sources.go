package syncer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// syncSources carries out a plan for spec.sources. It renews the leases
// the plan says (a renewal that cannot go on becomes a read of that
// source), reads the sources it says, merges what it read with the keys
// the Secret holds from the rest (templates render over the merged data,
// so they see every source), and writes the Secret once. Every new lease
// is recorded as pending in its source's journal before the Secret is
// written, and becomes current only once the API server answers holding
// it; the lease it replaces is then scheduled for revocation. Two sources
// giving one key is KeyConflict and writes nothing. The Secret expires at
// the earliest of its sources' expiries.
func (r *Reconciler) syncSources(ctx context.Context, o *observation, p Plan, orig *v1alpha1.VaultSecretStatus, now time.Time) (ctrl.Result, string, error) {
	vs := o.vs
	st := &vs.Status
	specs := vs.Spec.Sources
	key := client.ObjectKeyFromObject(vs)
	tok, err := r.vault.tenant(ctx, vs)
	if err != nil {
		return r.failed(ctx, vs, orig, now, authFailureReason(err), err)
	}
	// As in fetchAndWrite: once credentials may be issued, a shutdown
	// still lets the pass record them.
	ctx, cancelPass := outliveCancel(ctx, finishAfterShutdown)
	defer cancelPass()
	for len(st.Sources) < len(specs) {
		st.Sources = append(st.Sources, v1alpha1.SourceStatus{})
	}
	read := make([]bool, len(specs))
	var renewed []string
	for i := range specs {
		if i >= len(p.Sources) {
			continue
		}
		read[i] = p.Sources[i].Read
		if !p.Sources[i].Renew || read[i] || st.Sources[i].Lease == nil {
			continue
		}
		ss := &st.Sources[i]
		rn, err := r.renewCurrent(ctx, vs, tok, ss.Lease, ss.LastSyncTime, now)
		if err != nil {
			return r.failedVault(ctx, vs, orig, now, fmt.Errorf("%s: %w", sourceLabel(i, &specs[i]), err))
		}
		if rn.reissue != "" {
			r.Log.Info("issuing new credentials", "vaultsecret", key, "source", i, "reason", rn.reissue)
			r.vault.countLease("reissue", nil)
			read[i] = true
			continue
		}
		ss.LastSyncTime, ss.RefreshAt, ss.ExpiresAt = ptrTime(now), ptrTime(rn.refreshAt), ptrTime(rn.end)
		renewed = append(renewed, fmt.Sprint(i))
	}
	if !anyOf(read) {
		return r.renewedSources(ctx, o, orig, renewed, now)
	}
	for i := range specs {
		// A renewal turned into a read renders the templates again: a
		// source whose key a template shadows is read with it.
		read[i] = read[i] || shadowed(st.Sources[i].Keys, vs.Spec.Target.Template)
	}
	if p.Restore {
		r.status.event(vs, corev1.EventTypeWarning, "Restored", "Sync", "Secret %q was changed by hand; restoring it from Vault", targetName(vs))
		r.restored(key, now)
	}
	r.Log.V(1).Info("reading Vault", "vaultsecret", key, "why", p.Why)
	got := make(map[int]fetched, len(specs))
	fresh := make(map[int]map[string][]byte, len(specs))
	// Leases issued in this pass that no Secret will hold if it stops
	// before the journal is written.
	unused := func() {
		for _, f := range got {
			if f.leaseID != "" {
				r.vault.releaseUnused(ctx, tok, f.leaseID)
			}
		}
	}
	fetchedNow, err := fetchConcurrently(read, func(i int) (fetched, error) {
		src := &specs[i]
		f, err := r.vault.fetch(ctx, vs, src, kindOfSource(src), tok)
		if err != nil {
			return f, fmt.Errorf("%s: %w", sourceLabel(i, src), err)
		}
		return f, nil
	})
	for i, f := range fetchedNow {
		got[i], fresh[i] = f, f.data
	}
	if !o.kind.leased() {
		// No dynamic source: nothing issued, no revocation can follow.
		o.vaultDone()
	}
	if err != nil {
		unused()
		return r.failedVault(ctx, vs, orig, now, err)
	}
	var current map[string][]byte
	if o.secret != nil {
		current = o.secret.Data
	}
	raw, keys, err := MergeSources(specs, st.Sources, current, fresh)
	if err != nil {
		unused()
		return r.failed(ctx, vs, orig, now, ReasonKeyConflict, err)
	}
	data, err := shape(vs, raw, r.Clock)
	if err != nil {
		unused()
		return r.failed(ctx, vs, orig, now, ReasonInvalid, err)
	}
	// Each source's journal is written before the Secret: a failed write
	// never leaves a lease nobody will revoke.
	issued := false
	for i, f := range got {
		if f.leaseID == "" {
			continue
		}
		issued = true
		if dropped := recordPending(&st.Sources[i].LeaseJournal, f, tok, now); dropped.ID != "" {
			r.releaseReplaced(ctx, o, tok, dropped)
		}
	}
	if issued {
		if err := r.status.write(ctx, vs, orig); err != nil {
			unused()
			return ctrl.Result{}, "error", err
		}
	}
	sched := make([]v1alpha1.SourceStatus, len(specs))
	var held []string
	var refreshAt, expiresAt time.Time
	for i := range specs {
		ss := st.Sources[i]
		sched[i] = v1alpha1.SourceStatus{Hash: ss.Hash, Keys: keys[i], LastSyncTime: ss.LastSyncTime, RefreshAt: ss.RefreshAt, ExpiresAt: ss.ExpiresAt}
		if f, ok := got[i]; ok {
			at, end := kindOfSource(&specs[i]).plan(now, vs, f, tok.Expires)
			sched[i].Hash, sched[i].LastSyncTime, sched[i].RefreshAt, sched[i].ExpiresAt = sourceSpecHash(&specs[i]), ptrTime(now), ptrTime(at), ptrTime(end)
		}
		refreshAt = NextWake(refreshAt, timeOf(sched[i].RefreshAt))
		expiresAt = NextWake(expiresAt, timeOf(sched[i].ExpiresAt))
		switch {
		case specs[i].Dynamic == nil:
		case got[i].leaseID != "":
			held = append(held, got[i].leaseID)
		case ss.Lease != nil:
			held = append(held, ss.Lease.ID)
		}
	}
	changed := st.DataHMAC != "" && dataState(r.HMACKey, st.DataHMAC, data) == DataEdited
	rec := passRecord(o, now, refreshAt, expiresAt, restartOwedAt(vs, changed, now))
	for i := range sched {
		rec.Sources = append(rec.Sources, SourceRecord{Hash: sched[i].Hash, Keys: sched[i].Keys, LastSync: unixOfPtr(sched[i].LastSyncTime),
			RefreshAt: unixOfPtr(sched[i].RefreshAt), ExpiresAt: unixOfPtr(sched[i].ExpiresAt)})
	}
	w, err := r.secrets.apply(ctx, vs, data, expiresAt, joinLeases(held), sealRecord(r.HMACKey, vs.UID, rec, data), o.secret, o.unread)
	if err != nil {
		// The pending leases stay in their journals: a later pass that
		// reads the Secret holding them promotes them, else revokes them;
		// the current ones, which the Secret still holds, stay current.
		return r.secretWriteFailed(ctx, vs, orig, now, err)
	}
	if !holdsAll(w.LeaseID, held) {
		return r.failed(ctx, vs, orig, now, ReasonSecretWrite, errors.New("the Secret read back does not hold the new leases"))
	}
	for i, f := range got {
		if f.leaseID == "" {
			continue
		}
		if older := promote(&st.Sources[i].LeaseJournal, now, vs.Spec.RevokeGracePeriod); older.ID != "" {
			r.releaseReplaced(ctx, o, tok, older)
		}
	}
	for i := range sched {
		ss := &st.Sources[i]
		ss.Hash, ss.Keys, ss.LastSyncTime, ss.RefreshAt, ss.ExpiresAt = sched[i].Hash, sched[i].Keys, sched[i].LastSyncTime, sched[i].RefreshAt, sched[i].ExpiresAt
	}
	st.DataHMAC, st.SecretName = dataHMAC(r.HMACKey, data), targetName(vs)
	st.ExpiresAt, st.RefreshAt, st.LastSyncTime = ptrTime(expiresAt), ptrTime(refreshAt), ptrTime(now)
	st.SourceHash, st.MetadataHash, st.AppliedGeneration = o.SourceHash, o.MetadataHash, vs.Generation
	r.status.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("Secret %q synced from %d sources (read now: %s%s); expires at %s",
		targetName(vs), len(specs), strings.Join(indices(read), ", "), renewedNote(renewed), formatTime(expiresAt)))
	if changed {
		r.newData(ctx, vs, now)
	}
	return requeueAt(now, NextWake(refreshAt, earliestRevokePrevious(st))), "synced", r.status.write(ctx, vs, orig)
}

// renewedSources ends a pass that only renewed leases: the Secret keeps
// its data, and its expiry moves to the earliest of its sources'. The
// renewals are in status before the Secret's expiry moves, as for
// spec.source.
func (r *Reconciler) renewedSources(ctx context.Context, o *observation, orig *v1alpha1.VaultSecretStatus, renewed []string, now time.Time) (ctrl.Result, string, error) {
	vs := o.vs
	st := &vs.Status
	var refreshAt, expiresAt time.Time
	for i := range vs.Spec.Sources {
		refreshAt = NextWake(refreshAt, timeOf(st.Sources[i].RefreshAt))
		expiresAt = NextWake(expiresAt, timeOf(st.Sources[i].ExpiresAt))
	}
	st.ExpiresAt, st.RefreshAt = ptrTime(expiresAt), ptrTime(refreshAt)
	if err := r.writeMetadata(ctx, o); err != nil {
		return r.failed(ctx, vs, orig, now, ReasonSecretWrite, err)
	}
	st.MetadataHash = o.MetadataHash
	r.status.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("Secret %q holds the current leases (renewed now: %s); expires at %s",
		targetName(vs), strings.Join(renewed, ", "), formatTime(expiresAt)))
	return requeueAt(now, NextWake(refreshAt, earliestRevokePrevious(st))), "renewed", r.status.write(ctx, vs, orig)
}

// promotedSource records the schedule of source i once its pending lease
// is promoted (the write of an earlier pass whose answer was lost), and
// says Ready=True when the Secret holds every current lease.
func (r *Reconciler) promotedSource(o *observation, i int) {
	vs := o.vs
	st := &vs.Status
	ss := &st.Sources[i]
	l := ss.Lease
	end := EffectiveEnd(l.ExpiresAt.Time, timeOf(l.TokenExpiresAt))
	_, refresh := DecideLease(l.IssuedAt.Time, LeaseFacts{IssuedAt: l.IssuedAt.Time, RenewedAt: l.IssuedAt.Time, ExpiresAt: l.ExpiresAt.Time,
		TokenExpiresAt: timeOf(l.TokenExpiresAt), TokenLive: true, Renewable: l.Renewable, Wanted: wantedTTL(vs)}, jitterFor(string(vs.UID)))
	ss.LastSyncTime, ss.RefreshAt, ss.ExpiresAt = ptrTime(l.IssuedAt.Time), ptrTime(refresh), ptrTime(end)
	if i < len(vs.Spec.Sources) && st.SourceHash == o.SourceHash {
		// Issued under the spec applied last, which has not changed.
		ss.Hash = sourceSpecHash(&vs.Spec.Sources[i])
	}
	var expiresAt time.Time
	for j := range vs.Spec.Sources {
		if j < len(st.Sources) {
			expiresAt = NextWake(expiresAt, timeOf(st.Sources[j].ExpiresAt))
		}
	}
	st.ExpiresAt, st.SecretName = ptrTime(expiresAt), targetName(vs)
	if o.secret != nil && holdsAll(o.secret.Annotations[LeaseAnnotation], currentLeases(vs)) {
		r.status.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("Secret %q holds the current leases; expires at %s", targetName(vs), formatTime(expiresAt)))
	}
}

func anyOf(bs []bool) bool {
	for _, b := range bs {
		if b {
			return true
		}
	}
	return false
}

// indices lists the positions set in bs.
func indices(bs []bool) []string {
	var out []string
	for i, b := range bs {
		if b {
			out = append(out, fmt.Sprint(i))
		}
	}
	return out
}

func renewedNote(renewed []string) string {
	if len(renewed) == 0 {
		return ""
	}
	return "; renewed: " + strings.Join(renewed, ", ")
}

// fetchConcurrently calls fetch for every source marked in read, all at
// once: a pass waits for its slowest source, not for the sum of them. It
// returns what succeeded, also when another failed (leases issued by the
// successes are the caller's to use or release), and the error of the
// lowest-numbered source that failed, so the reason reported does not
// depend on which answer came first.
func fetchConcurrently(read []bool, fetch func(i int) (fetched, error)) (map[int]fetched, error) {
	fs := make([]fetched, len(read))
	errs := make([]error, len(read))
	var wg sync.WaitGroup
	for i, r := range read {
		if !r {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs[i], errs[i] = fetch(i)
		}()
	}
	wg.Wait()
	got := make(map[int]fetched, len(read))
	var first error
	for i, r := range read {
		switch {
		case !r:
		case errs[i] != nil:
			if first == nil {
				first = errs[i]
			}
		default:
			got[i] = fs[i]
		}
	}
	return got, first
}
