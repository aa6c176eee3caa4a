package syncer

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// fetchAndWriteSources reads the due ones of spec.sources (every one when
// the plan says so), merges them with the keys the Secret holds from the
// rest (templates render over the merged data, so they see every source),
// and writes the Secret once. Two sources
// giving one key is KeyConflict and writes nothing. The Secret expires at
// the earliest of its sources' expiries.
func (r *Reconciler) fetchAndWriteSources(ctx context.Context, o *observation, p Plan, orig *v1alpha1.VaultSecretStatus, now time.Time) (ctrl.Result, string, error) {
	vs := o.vs
	st := &vs.Status
	specs := vs.Spec.Sources
	key := client.ObjectKeyFromObject(vs)
	tok, err := r.vault.tenant(ctx, vs)
	if err != nil {
		return r.failed(ctx, vs, orig, now, authFailureReason(err), err)
	}
	if p.Restore {
		r.status.event(vs, corev1.EventTypeWarning, "Restored", "Sync", "Secret %q was changed by hand; restoring it from Vault", targetName(vs))
		r.restored(key, now)
	}
	due := DueSources(specs, st.Sources, p.AllSources || o.secret == nil, vs.Spec.Target.Template, now)
	next := make([]v1alpha1.SourceStatus, len(specs))
	if len(st.Sources) == len(specs) {
		copy(next, st.Sources)
	}
	fresh := make(map[int]map[string][]byte, len(due))
	read := make([]string, 0, len(due))
	for _, i := range due {
		src := &specs[i]
		kind := kindOfSource(src)
		f, err := r.vault.fetch(ctx, vs, src, kind, tok)
		if err != nil {
			return r.failedVault(ctx, vs, orig, now, fmt.Errorf("%s: %w", sourceLabel(i, src), err))
		}
		refreshAt, expiresAt := kind.plan(now, vs, f, tok.Expires)
		fresh[i] = f.data
		next[i] = v1alpha1.SourceStatus{Hash: sourceSpecHash(src), LastSyncTime: ptrTime(now), RefreshAt: ptrTime(refreshAt), ExpiresAt: ptrTime(expiresAt)}
		read = append(read, fmt.Sprint(i))
	}
	var current map[string][]byte
	if o.secret != nil {
		current = o.secret.Data
	}
	raw, keys, err := MergeSources(specs, st.Sources, current, fresh)
	if err != nil {
		return r.failed(ctx, vs, orig, now, ReasonKeyConflict, err)
	}
	var refreshAt, expiresAt time.Time
	for i := range next {
		next[i].Keys = keys[i]
		refreshAt = NextWake(refreshAt, timeOf(next[i].RefreshAt))
		expiresAt = NextWake(expiresAt, timeOf(next[i].ExpiresAt))
	}
	data, err := shape(vs, raw, r.Clock)
	if err != nil {
		return r.failed(ctx, vs, orig, now, ReasonInvalid, err)
	}
	if _, err := r.secrets.apply(ctx, vs, data, expiresAt, "", o.secret); err != nil {
		return r.failed(ctx, vs, orig, now, ReasonSecretWrite, err)
	}
	changed := st.DataHMAC != "" && dataState(r.HMACKey, st.DataHMAC, data) == DataEdited
	st.Sources = next
	st.DataHMAC, st.SecretName = dataHMAC(r.HMACKey, data), targetName(vs)
	st.ExpiresAt, st.RefreshAt, st.LastSyncTime = ptrTime(expiresAt), ptrTime(refreshAt), ptrTime(now)
	st.SourceHash, st.MetadataHash, st.AppliedGeneration = o.SourceHash, o.MetadataHash, vs.Generation
	r.status.setReady(vs, metav1.ConditionTrue, ReasonSynced, fmt.Sprintf("Secret %q synced from %d sources (read now: %s); expires at %s",
		targetName(vs), len(specs), strings.Join(read, ", "), formatTime(expiresAt)))
	if changed {
		r.status.event(vs, corev1.EventTypeNormal, "Rotated", "Rotate", "Secret %q has new data from Vault", targetName(vs))
		r.restarts.request(ctx, vs)
	}
	return requeueAt(now, refreshAt), "synced", r.status.write(ctx, vs, orig)
}
