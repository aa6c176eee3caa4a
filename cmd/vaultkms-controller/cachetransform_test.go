package main

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSecretCacheTransformKeepsOnlyControlledData(t *testing.T) {
	yes, no := true, false
	ref := func(apiVersion, kind string, controller *bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: "x", UID: "u", Controller: controller}}
	}
	cases := []struct {
		name     string
		owners   []metav1.OwnerReference
		keepData bool
	}{
		{"written by the controller", ref("secrets.vaultkms.io/v1alpha1", "VaultSecret", &yes), true},
		{"labelled by a tenant, no owner", nil, false},
		{"owned but not controlled", ref("secrets.vaultkms.io/v1alpha1", "VaultSecret", &no), false},
		{"controlled by something else", ref("apps/v1", "Deployment", &yes), false},
		{"a look-alike kind in another group", ref("example.com/v1", "VaultSecret", &yes), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "s", OwnerReferences: tc.owners, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
				Data:       map[string][]byte{"big": make([]byte, 1<<20)},
			}
			out, err := secretCacheTransform(s)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Secret)
			if (got.Data != nil) != tc.keepData {
				t.Fatalf("data kept: %v, want %v", got.Data != nil, tc.keepData)
			}
			if got.ManagedFields != nil {
				t.Fatal("managedFields were cached")
			}
		})
	}
}

func TestSecretCacheTransformKeepsOnlyTheCreateMarker(t *testing.T) {
	fields := &metav1.FieldsV1{Raw: []byte(`{"f:data":{"f:password":{}}}`)}
	cases := []struct {
		name    string
		entries []metav1.ManagedFieldsEntry
		marker  bool
	}{
		{"created by the controller", []metav1.ManagedFieldsEntry{{Manager: "vaultkms", Operation: metav1.ManagedFieldsOperationUpdate, FieldsV1: fields}}, true},
		{"created, then another tool's label", []metav1.ManagedFieldsEntry{
			{Manager: "vaultkms", Operation: metav1.ManagedFieldsOperationUpdate, FieldsV1: fields},
			{Manager: "argocd", Operation: metav1.ManagedFieldsOperationApply, FieldsV1: fields}}, true},
		{"applied only", []metav1.ManagedFieldsEntry{{Manager: "vaultkms", Operation: metav1.ManagedFieldsOperationApply, FieldsV1: fields}}, false},
		{"another manager's update", []metav1.ManagedFieldsEntry{{Manager: "kubectl-create", Operation: metav1.ManagedFieldsOperationUpdate, FieldsV1: fields}}, false},
		{"the controller's status-subresource update", []metav1.ManagedFieldsEntry{{Manager: "vaultkms", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", FieldsV1: fields}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := secretCacheTransform(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: tc.entries}})
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Secret).ManagedFields
			if tc.marker {
				if len(got) != 1 || got[0].Manager != "vaultkms" || got[0].Operation != metav1.ManagedFieldsOperationUpdate || got[0].FieldsV1 != nil {
					t.Fatalf("cached managed fields %+v, want only the field-less marker", got)
				}
				return
			}
			if got != nil {
				t.Fatalf("cached managed fields %+v, want none", got)
			}
		})
	}
}
