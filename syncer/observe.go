package syncer

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// observation is what Observe read: the facts Decide takes, and the
// objects Act writes from.
type observation struct {
	Observed
	vs     *v1alpha1.VaultSecret
	kind   sourceKind
	secret *corev1.Secret
	// unread tells that the Secret's absence was presumed, not read
	// (see presumeAbsent).
	unread bool
	// doneWithVault gives back the namespace's slot once the pass will
	// call Vault no more (nil: it holds none).
	doneWithVault func()
	// told are events and counts of what the pass did that the next pass
	// would find undone, and tell again, were its status write lost: they
	// are given once the pass ended with its status written.
	told []func()
}

// tellOnceWritten gives f once the pass's status write has landed.
func (o *observation) tellOnceWritten(f func()) { o.told = append(o.told, f) }

// vaultDone is called where a pass has made its last Vault call: the
// writes that follow do not hold one of the namespace's slots, which
// bound passes calling Vault, not passes waiting for the API server.
func (o *observation) vaultDone() {
	if o.doneWithVault != nil {
		o.doneWithVault()
	}
}

// restoreRecord remembers recent restores of a hand-edited Secret, in
// memory like controller-runtime's rate limiters: a restart forgets it.
type restoreRecord struct {
	count int
	last  time.Time
}

// observe reads everything a pass decides on, in one place: the
// VaultSecret (given), its Secret (from the API server when a pending
// lease waits for the read-back or the cache has none), the tenant token
// held in memory, and the restores of a hand-edited Secret.
func (r *Reconciler) observe(ctx context.Context, vs *v1alpha1.VaultSecret) (*observation, error) {
	kind := kindOf(vs)
	o := &observation{vs: vs, kind: kind}
	o.VS, o.Kind = vs, kind.name()
	o.Invalid = r.validator.validate(vs)
	o.SourceHash, o.MetadataHash = sourceHash(vs), metadataHash(vs)
	if err := r.observeAuth(ctx, o); err != nil {
		return nil, err
	}
	_, recheck := r.recheck.LoadAndDelete(client.ObjectKeyFromObject(vs))
	presume := !recheck && presumeAbsent(vs)
	sec, confirmed, err := r.secrets.get(ctx, vs, anyPending(&vs.Status), presume)
	if err != nil {
		return nil, err
	}
	o.Confirmed = confirmed
	o.unread = sec == nil && !confirmed
	if sec != nil {
		// A write whose watch event came before the API server's answer
		// was recorded is never matched by ownSecretWrite: forget it here,
		// where the Secret read holds it, so no entry outlives its event.
		r.secretWrites.CompareAndDelete(client.ObjectKeyFromObject(sec), sec.ResourceVersion)
		o.secret = sec
		owned := metav1.IsControlledBy(sec, vs)
		o.Secret = &corev1Secret{Owned: owned, Adoptable: !owned && vs.Spec.Target.Adopt && !controlledByVaultSecret(sec),
			LeaseID: sec.Annotations[LeaseAnnotation], ExpiresAt: sec.Annotations[ExpiresAtAnnotation]}
		o.Data = dataState(r.HMACKey, vs.Status.DataHMAC, sec.Data)
		if owned {
			r.observeRecord(o, sec)
		}
	}
	if tok := r.vault.cachedToken(vs); tok != nil {
		o.TokenAccessor, o.TokenExpires = tok.Accessor, tok.Expires
	}
	if v, ok := r.restores.Load(client.ObjectKeyFromObject(vs)); ok {
		rec := v.(restoreRecord)
		o.Restores, o.LastRestore = rec.count, rec.last
	}
	return o, nil
}

// presumeAbsent tells whether a Secret missing from the cache may be
// taken as missing from the API server, saving a read on the path where
// most Secrets are written: that of a VaultSecret never reported on (no
// condition, no Secret written) whose sources only read, so that should
// a Secret of that name exist after all (not managed, or not yet in the
// cache) nothing was issued for it: the create fails, and the next pass
// reads the Secret and decides on it.
func presumeAbsent(vs *v1alpha1.VaultSecret) bool {
	if vs.Status.SecretName != "" || len(vs.Status.Conditions) > 0 || anyPending(&vs.Status) {
		return false
	}
	if len(vs.Spec.Sources) == 0 {
		return vs.Spec.Source.KV != nil
	}
	for _, src := range vs.Spec.Sources {
		if src.KV == nil {
			return false
		}
	}
	return true
}

// anyPending tells whether a journal holds a pending lease: the Secret is
// then read from the API server, whose answer decides its fate.
func anyPending(st *v1alpha1.VaultSecretStatus) bool {
	for _, j := range journalsOf(st) {
		if j.PendingLease != nil {
			return true
		}
	}
	return false
}

// restored counts a restore of a hand-edited Secret.
func (r *Reconciler) restored(key client.ObjectKey, now time.Time) {
	rec := restoreRecord{count: 1, last: now}
	if v, ok := r.restores.Load(key); ok {
		if prev := v.(restoreRecord); now.Sub(prev.last) < restoreResetAfter {
			rec.count = prev.count + 1
		}
	}
	r.restores.Store(key, rec)
}

// controlledByVaultSecret tells whether a VaultSecret controls sec: such a
// Secret is never adopted by another, whatever its spec says.
func controlledByVaultSecret(sec *corev1.Secret) bool {
	ref := metav1.GetControllerOf(sec)
	return ref != nil && ref.Kind == "VaultSecret" && strings.HasPrefix(ref.APIVersion, v1alpha1.GroupVersion.Group+"/")
}

// observeRecord finds a write of this controller that status does not
// hold (see WriteRecordAnnotation). The record is opened only when status
// and the Secret disagree on the data or the spec: not on the passes
// where nothing changed, which are most.
func (r *Reconciler) observeRecord(o *observation, sec *corev1.Secret) {
	st := &o.vs.Status
	value, ok := sec.Annotations[WriteRecordAnnotation]
	if !ok || (o.Data == DataUnchanged && st.DataHMAC != "" && st.SourceHash == o.SourceHash) {
		return
	}
	rec, ok := openRecord(r.HMACKey, o.vs.UID, value, sec.Data)
	if !ok {
		return
	}
	if sum := dataHMAC(r.HMACKey, sec.Data); rec.unrecorded(st, o.SourceHash, sum) {
		o.Unrecorded, o.DataHMAC = &rec, sum
	}
}
