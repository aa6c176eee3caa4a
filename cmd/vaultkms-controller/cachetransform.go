package main

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/syncer"
)

// stripManagedFields is the transform every cached object gets.
var stripManagedFields = cache.TransformStripManagedFields()

// secretCacheTransform keeps in the cache the data of the Secrets a
// VaultSecret controls, and only the metadata of the others. The cache
// selects Secrets by the managed-by label, which anyone who can write a
// Secret can set: without this, a tenant labelling large Secrets would
// grow the controller's memory by their data. The controller never reads
// the data of a Secret it does not control (it reports SecretConflict).
//
// Of the managed fields only one fact stays: whether the controller owns
// fields through its create (see syncer.OwnsByUpdate), which decides
// whether an apply that drops a field must first take them over.
func secretCacheTransform(obj any) (any, error) {
	created := false
	if s, ok := obj.(*corev1.Secret); ok {
		created = syncer.OwnsByUpdate(s.ManagedFields)
	}
	obj, err := stripManagedFields(obj)
	if err != nil {
		return obj, err
	}
	if s, ok := obj.(*corev1.Secret); ok {
		if !controlledByVaultSecret(s) {
			s.Data, s.StringData = nil, nil
		}
		if created {
			s.ManagedFields = syncer.UpdateOwnershipMarker()
		}
		shareSecretStrings(&cacheStrings, s)
	}
	return obj, nil
}

// cacheStrings is the one table the cache transforms share strings
// through (see cacheintern.go).
var cacheStrings interner

// vaultSecretCacheTransform strips managed fields from a VaultSecret and
// shares what thousands of VaultSecrets repeat.
func vaultSecretCacheTransform(obj any) (any, error) {
	obj, err := stripManagedFields(obj)
	if err != nil {
		return obj, err
	}
	if vs, ok := obj.(*v1alpha1.VaultSecret); ok {
		shareVaultSecretStrings(&cacheStrings, vs)
	}
	return obj, nil
}

func shareMeta(t *interner, tm *metav1.TypeMeta, m *metav1.ObjectMeta) {
	tm.APIVersion, tm.Kind = t.str(tm.APIVersion), t.str(tm.Kind)
	m.Namespace = t.str(m.Namespace)
	m.Labels = t.labels(m.Labels)
	m.Annotations = t.keys(m.Annotations)
	t.each(m.Finalizers)
	for i := range m.OwnerReferences {
		r := &m.OwnerReferences[i]
		r.APIVersion, r.Kind = t.str(r.APIVersion), t.str(r.Kind)
	}
}

func shareSecretStrings(t *interner, s *corev1.Secret) {
	shareMeta(t, &s.TypeMeta, &s.ObjectMeta)
	s.Type = corev1.SecretType(t.str(string(s.Type)))
}

func shareVaultSecretStrings(t *interner, vs *v1alpha1.VaultSecret) {
	shareMeta(t, &vs.TypeMeta, &vs.ObjectMeta)
	sp := &vs.Spec
	if k := sp.Auth.Kubernetes; k != nil {
		k.Role, k.ServiceAccountName, k.Mount = t.str(k.Role), t.str(k.ServiceAccountName), t.str(k.Mount)
		t.each(k.Audiences)
	}
	if a := sp.Auth.AppRole; a != nil {
		a.SecretRef, a.RoleIDKey, a.SecretIDKey, a.Mount = t.str(a.SecretRef), t.str(a.RoleIDKey), t.str(a.SecretIDKey), t.str(a.Mount)
	}
	if sp.AuthRef != nil {
		sp.AuthRef.Name = t.str(sp.AuthRef.Name)
	}
	shareSource(t, &sp.Source)
	for i := range sp.Sources {
		shareSource(t, &sp.Sources[i])
	}
	sp.Target.Type = t.str(sp.Target.Type)
	sp.Target.Labels = t.labels(sp.Target.Labels)
	sp.Target.Annotations = t.keys(sp.Target.Annotations)
	sp.ExpiryPolicy = t.str(sp.ExpiryPolicy)
	for i := range vs.Status.Conditions {
		c := &vs.Status.Conditions[i]
		c.Type, c.Status, c.Reason = t.str(c.Type), metav1.ConditionStatus(t.str(string(c.Status))), t.str(c.Reason)
	}
	for i := range vs.Status.Sources {
		t.each(vs.Status.Sources[i].Keys)
	}
}

func shareSource(t *interner, s *v1alpha1.Source) {
	switch {
	case s.KV != nil:
		s.KV.Mount, s.KV.Path = t.str(s.KV.Mount), t.str(s.KV.Path)
	case s.Dynamic != nil:
		s.Dynamic.Mount, s.Dynamic.Path = t.str(s.Dynamic.Mount), t.str(s.Dynamic.Path)
	case s.PKI != nil:
		s.PKI.Mount, s.PKI.Role = t.str(s.PKI.Mount), t.str(s.PKI.Role)
	}
}

// controlledByVaultSecret tells whether a VaultSecret is the Secret's
// controller, as the controller writes it.
func controlledByVaultSecret(s *corev1.Secret) bool {
	for _, r := range s.OwnerReferences {
		if r.Controller == nil || !*r.Controller || r.Kind != "VaultSecret" {
			continue
		}
		if gv, err := schema.ParseGroupVersion(r.APIVersion); err == nil && gv.Group == v1alpha1.GroupVersion.Group {
			return true
		}
	}
	return false
}
