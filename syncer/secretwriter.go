package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/util/csaupgrade"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// secretWriter writes the target Secret with server-side apply under
// FieldManager: it owns the labels, annotations, data keys, type and owner
// reference it sets, and nothing else, so others' metadata stays.
type secretWriter struct {
	Client    client.Client
	APIReader client.Reader
	// wrote, when set, is told the resourceVersion of each Secret this
	// writer created or applied.
	wrote func(client.ObjectKey, string)
	// createAs creates a Secret (nil: Client.Create): see
	// MetadataAnswers.
	createAs func(ctx context.Context, s *corev1.Secret, fieldManager string) error
	// applyAs server-side applies a Secret, forcing (nil: Client.Patch):
	// see MetadataAnswers.
	applyAs func(ctx context.Context, s *corev1.Secret, body []byte, fieldManager string) error
}

func (w *secretWriter) note(s *corev1.Secret) {
	if w.wrote != nil {
		w.wrote(client.ObjectKeyFromObject(s), s.ResourceVersion)
	}
}

// written is the Secret as the API server returned it after a write:
// the read-back that tells which lease it holds.
type written struct {
	LeaseID   string
	ExpiresAt string
}

// errTargetExists is a create that found a Secret of the target's name:
// its absence was presumed (see presumeAbsent), and the pass ends so that
// the next one reads the Secret and decides on it.
var errTargetExists = errors.New("a Secret of that name already exists")

// apply writes data and metadata, with record as the Secret's write
// record (see WriteRecordAnnotation; empty for none). existing is the Secret as observed (nil
// when absent), already checked to be this VaultSecret's; unread tells
// that its absence was presumed rather than read, and the Secret is then
// created, which fails with errTargetExists if one exists after all.
func (w *secretWriter) apply(ctx context.Context, vs *v1alpha1.VaultSecret, data map[string][]byte, expiresAt time.Time, leaseID, record string, existing *corev1.Secret, unread bool) (written, error) {
	want := desiredSecret(vs, data, expiresAt, leaseID, record)
	if existing == nil && unread {
		return w.create(ctx, vs, want)
	}
	if existing != nil && OwnsByUpdate(existing.ManagedFields) && Drops(existing, want) {
		// Fields this controller set by create or update (adopt) are
		// owned by that operation, not by its server-side applies, so an
		// apply leaving one out would not remove it. Only when this
		// apply drops something does that matter; the ownership is then
		// moved over first.
		if err := w.takeOverUpdates(ctx, existing); err != nil {
			return written{}, err
		}
	}
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
	if w.applyAs != nil {
		err = w.applyAs(ctx, got, body, FieldManager)
	} else {
		err = w.Client.Patch(ctx, got, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(FieldManager), client.ForceOwnership)
	}
	if err != nil {
		return written{}, fmt.Errorf("write Secret %s/%s: %w", vs.Namespace, *want.Name, err)
	}
	w.note(got)
	return written{LeaseID: got.Annotations[LeaseAnnotation], ExpiresAt: got.Annotations[ExpiresAtAnnotation]}, nil
}

// create writes a Secret presumed absent. A create costs the API server
// less than a server-side apply, and presuming saves the read before it.
// The fields it sets are owned by the create (an Update entry of
// FieldManager) until an apply needs them (see takeOverUpdates).
func (w *secretWriter) create(ctx context.Context, vs *v1alpha1.VaultSecret, want *corev1ac.SecretApplyConfiguration) (written, error) {
	s := secretOf(want)
	var err error
	if w.createAs != nil {
		err = w.createAs(ctx, s, FieldManager)
	} else {
		err = w.Client.Create(ctx, s, client.FieldOwner(FieldManager))
	}
	if err != nil {
		if apierrors.IsAlreadyExists(err) {
			return written{}, fmt.Errorf("create Secret %s/%s: %w", vs.Namespace, *want.Name, errTargetExists)
		}
		return written{}, fmt.Errorf("write Secret %s/%s: %w", vs.Namespace, *want.Name, err)
	}
	w.note(s)
	return written{LeaseID: s.Annotations[LeaseAnnotation], ExpiresAt: s.Annotations[ExpiresAtAnnotation]}, nil
}

// secretOf is the Secret an apply configuration of desiredSecret describes,
// for a create.
func secretOf(want *corev1ac.SecretApplyConfiguration) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: *want.Name, Namespace: *want.Namespace,
		Labels: want.Labels, Annotations: want.Annotations}, Data: want.Data}
	if want.Type != nil {
		s.Type = *want.Type
	}
	for _, ref := range want.OwnerReferences {
		s.OwnerReferences = append(s.OwnerReferences, metav1.OwnerReference{APIVersion: *ref.APIVersion, Kind: *ref.Kind,
			Name: *ref.Name, UID: *ref.UID, Controller: ref.Controller, BlockOwnerDeletion: ref.BlockOwnerDeletion})
	}
	return s
}

// takeOverUpdates moves the fields FieldManager owns through update
// operations (its create, an adoption) to its applies, with one JSON patch
// conditional on the version read, so that the apply that follows removes
// what it leaves out. The managed fields are read from the API server
// when existing holds only the cache's marker of them.
func (w *secretWriter) takeOverUpdates(ctx context.Context, existing *corev1.Secret) error {
	live := existing
	if !fullManagedFields(existing.ManagedFields) {
		live = &corev1.Secret{}
		if err := w.APIReader.Get(ctx, client.ObjectKeyFromObject(existing), live); err != nil {
			return fmt.Errorf("read Secret %s/%s to take over the fields it was created with: %w", existing.Namespace, existing.Name, err)
		}
	}
	patch, err := csaupgrade.UpgradeManagedFieldsPatch(live, sets.New(FieldManager), FieldManager)
	if err != nil {
		return fmt.Errorf("take over the fields Secret %s/%s was created with: %w", existing.Namespace, existing.Name, err)
	}
	if patch == nil {
		return nil
	}
	if err := w.Client.Patch(ctx, live.DeepCopy(), client.RawPatch(types.JSONPatchType, patch)); err != nil {
		return fmt.Errorf("take over the fields Secret %s/%s was created with: %w", existing.Namespace, existing.Name, err)
	}
	return nil
}

// OwnsByUpdate tells whether managed fields hold an entry of FieldManager
// made by an update operation (its create or an adoption) rather than by
// server-side apply. The cache keeps only this fact of a Secret's managed
// fields (see UpdateOwnershipMarker).
func OwnsByUpdate(fields []metav1.ManagedFieldsEntry) bool {
	for _, f := range fields {
		if f.Manager == FieldManager && f.Operation == metav1.ManagedFieldsOperationUpdate && f.Subresource == "" {
			return true
		}
	}
	return false
}

// UpdateOwnershipMarker is what the cache keeps, in place of a Secret's
// managed fields, of one for which OwnsByUpdate holds: the entry's manager
// and operation, without the fields, which are read from the API server
// the one time they are needed. Every cached Secret shares the one slice
// (the cache's objects are never written to; readers get copies), so the
// marker costs no memory per Secret.
func UpdateOwnershipMarker() []metav1.ManagedFieldsEntry {
	return updateOwnershipMarker
}

var updateOwnershipMarker = []metav1.ManagedFieldsEntry{{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationUpdate}}

// fullManagedFields tells whether managed fields are the API server's,
// rather than the cache's marker.
func fullManagedFields(fields []metav1.ManagedFieldsEntry) bool {
	for _, f := range fields {
		if f.FieldsV1 == nil {
			return false
		}
	}
	return len(fields) > 0
}

// Drops tells whether applying want would leave out a data key, label,
// annotation or owner reference that the Secret has: the only case in
// which who owns those fields decides what the Secret holds afterwards.
func Drops(s *corev1.Secret, want *corev1ac.SecretApplyConfiguration) bool {
	for k := range s.Data {
		if _, ok := want.Data[k]; !ok {
			return true
		}
	}
	for k := range s.Labels {
		if _, ok := want.Labels[k]; !ok {
			return true
		}
	}
	for k := range s.Annotations {
		if _, ok := want.Annotations[k]; !ok {
			return true
		}
	}
	for _, ref := range s.OwnerReferences {
		if !slices.ContainsFunc(want.OwnerReferences, func(w metav1ac.OwnerReferenceApplyConfiguration) bool { return w.UID != nil && *w.UID == ref.UID }) {
			return true
		}
	}
	return false
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
// Secrets, and may not hold one just created) unless presume is set, when
// the cache's answer that there is none is taken as it is.
func (w *secretWriter) get(ctx context.Context, vs *v1alpha1.VaultSecret, confirm, presume bool) (*corev1.Secret, bool, error) {
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
		if presume {
			return nil, false, nil
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
