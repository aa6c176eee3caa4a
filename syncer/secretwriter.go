package syncer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// secretWriter writes the target Secret with server-side apply under
// FieldManager: it owns the labels, annotations, data keys, type and owner
// reference it sets, and nothing else, so others' metadata stays.
type secretWriter struct {
	Client    client.Client
	APIReader client.Reader
}

// written is the Secret as the API server returned it after a write:
// the read-back that tells which lease it holds.
type written struct {
	LeaseID   string
	ExpiresAt string
}

// apply writes data and metadata. existing is the Secret as observed (nil
// when absent), already checked to be this VaultSecret's.
func (w *secretWriter) apply(ctx context.Context, vs *v1alpha1.VaultSecret, data map[string][]byte, expiresAt time.Time, leaseID string, existing *corev1.Secret) (written, error) {
	want := desiredSecret(vs, data, expiresAt, leaseID)
	if existing != nil && existing.Type == *want.Type && !metav1.IsControlledBy(existing, vs) {
		if err := w.adopt(ctx, existing, data); err != nil {
			return written{}, err
		}
	}
	if existing != nil && existing.Type != *want.Type {
		// A Secret's type is immutable: replace it, exactly the one read.
		uid, rv := existing.UID, existing.ResourceVersion
		if err := w.Client.Delete(ctx, existing, client.Preconditions{UID: &uid, ResourceVersion: &rv}); err != nil && !apierrors.IsNotFound(err) {
			return written{}, fmt.Errorf("replace Secret %s/%s to change its type: %w", vs.Namespace, *want.Name, err)
		}
	}
	body, err := json.Marshal(want)
	if err != nil {
		return written{}, fmt.Errorf("write Secret %s/%s: %w", vs.Namespace, *want.Name, err)
	}
	// The answer is decoded into a fresh object: what the API server
	// stored, not what was sent.
	got := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: vs.Namespace, Name: *want.Name}}
	if err := w.Client.Patch(ctx, got, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return written{}, fmt.Errorf("write Secret %s/%s: %w", vs.Namespace, *want.Name, err)
	}
	return written{LeaseID: got.Annotations[LeaseAnnotation], ExpiresAt: got.Annotations[ExpiresAtAnnotation]}, nil
}

// adopt takes over a Secret another writer made (spec.target.adopt was
// checked by the decision): one update, conditional on the version read,
// replaces its data with data and drops its controller reference, so the
// application never sees the Secret missing and the other controller's
// deletion no longer garbage-collects it. Keys only the other writer set
// go too: otherwise every later pass would see data it did not write.
func (w *secretWriter) adopt(ctx context.Context, existing *corev1.Secret, data map[string][]byte) error {
	s := existing.DeepCopy()
	s.Data, s.StringData = data, nil
	refs := s.OwnerReferences[:0]
	for _, ref := range s.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			refs = append(refs, ref)
		}
	}
	s.OwnerReferences = refs
	if err := w.Client.Update(ctx, s, client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("adopt Secret %s/%s (spec.target.adopt): %w", s.Namespace, s.Name, err)
	}
	return nil
}

// get reads the target Secret: from the cache, or from the API server
// when confirm is set or the cache has none (the cache holds only managed
// Secrets, and may not hold one just created).
func (w *secretWriter) get(ctx context.Context, vs *v1alpha1.VaultSecret, confirm bool) (*corev1.Secret, bool, error) {
	key := types.NamespacedName{Namespace: vs.Namespace, Name: targetName(vs)}
	var s corev1.Secret
	if !confirm {
		err := w.Client.Get(ctx, key, &s)
		if err == nil {
			return &s, false, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, false, err
		}
	}
	err := w.APIReader.Get(ctx, key, &s)
	if apierrors.IsNotFound(err) {
		return nil, true, nil
	}
	if err != nil {
		return nil, true, err
	}
	return &s, true, nil
}

// deleteOwned deletes the named Secret only if vs controls it, and only
// the very object checked (UID precondition).
func (w *secretWriter) deleteOwned(ctx context.Context, vs *v1alpha1.VaultSecret, name string) error {
	var s corev1.Secret
	if err := w.APIReader.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: name}, &s); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(&s, vs) {
		return nil
	}
	uid := s.UID
	if err := w.Client.Delete(ctx, &s, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}
