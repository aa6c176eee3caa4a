package syncer

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

const (
	// ExpiresAtAnnotation is on every managed Secret: when it is deleted
	// unless refreshed first (RFC 3339).
	ExpiresAtAnnotation = "secrets.vaultkms.io/expires-at"
	// LeaseAnnotation names the lease whose credentials a dynamic Secret
	// holds (a lease id is not a secret): the controller calls a new lease
	// current only once it reads the Secret back holding it.
	LeaseAnnotation = "secrets.vaultkms.io/lease-id"
	// ManagedByLabel marks Secrets the controller owns; its cache holds
	// only those.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "vaultkms"
	// FieldManager is the server-side apply field manager of every
	// Secret write: the controller owns the fields it sets and no others,
	// so labels and annotations of other tools stay.
	FieldManager = "vaultkms"
)

// targetName is the Secret's name.
func targetName(vs *v1alpha1.VaultSecret) string {
	if vs.Spec.Target.Name != "" {
		return vs.Spec.Target.Name
	}
	return vs.Name
}

// secretType is the Secret's type: spec.target.type, else Opaque
// (kubernetes.io/tls for pki).
func secretType(vs *v1alpha1.VaultSecret) corev1.SecretType {
	if vs.Spec.Target.Type != "" {
		return corev1.SecretType(vs.Spec.Target.Type)
	}
	if hasPKI(vs) {
		return corev1.SecretTypeTLS
	}
	return corev1.SecretTypeOpaque
}

// hasPKI tells whether a certificate is among the sources.
func hasPKI(vs *v1alpha1.VaultSecret) bool {
	if vs.Spec.Source.PKI != nil {
		return true
	}
	for _, src := range vs.Spec.Sources {
		if src.PKI != nil {
			return true
		}
	}
	return false
}

// desiredSecret is the Secret a VaultSecret wants, as an apply
// configuration: exactly the fields the controller owns.
func desiredSecret(vs *v1alpha1.VaultSecret, data map[string][]byte, expiresAt time.Time, leaseID, record string) *corev1ac.SecretApplyConfiguration {
	labels := map[string]string{}
	for k, v := range vs.Spec.Target.Labels {
		labels[k] = v
	}
	labels[ManagedByLabel] = ManagedByValue
	ann := map[string]string{}
	for k, v := range vs.Spec.Target.Annotations {
		ann[k] = v
	}
	ann[ExpiresAtAnnotation] = formatTime(expiresAt)
	if leaseID != "" {
		ann[LeaseAnnotation] = leaseID
	}
	if record != "" {
		ann[WriteRecordAnnotation] = record
	}
	return corev1ac.Secret(targetName(vs), vs.Namespace).
		WithLabels(labels).
		WithAnnotations(ann).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(v1alpha1.GroupVersion.String()).WithKind("VaultSecret").
			WithName(vs.Name).WithUID(vs.UID).
			WithController(true).WithBlockOwnerDeletion(true)).
		WithType(secretType(vs)).
		WithData(data)
}
