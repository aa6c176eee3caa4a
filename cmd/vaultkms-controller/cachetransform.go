package main

import (
	corev1 "k8s.io/api/core/v1"
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
	}
	return obj, nil
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
