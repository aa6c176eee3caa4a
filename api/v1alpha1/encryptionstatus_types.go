package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of an EncryptionStatus.
const (
	// ConditionEncrypted is True when no scanned object is in plaintext.
	ConditionEncrypted = "Encrypted"
	// ConditionKeyCurrent is True when every scanned object is under the
	// current key_id.
	ConditionKeyCurrent = "KeyCurrent"

	ReasonEncryptionCompleted = "EncryptionCompleted"
	ReasonPlaintextFound      = "PlaintextFound"
	ReasonMigrating           = "Migrating"
	ReasonScanFailed          = "ScanFailed"
	// ReasonNoEvidence: the scan found no object at all, which proves
	// nothing (a wrong prefix or the wrong etcd looks the same).
	ReasonNoEvidence = "NoEvidence"
)

// EncryptionStatus publishes what vaultkms-auditor's last scan of etcd
// found: how many objects are encrypted, under which key_id, and where a key
// rotation stands. The auditor owns the one named "cluster".
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=encstatus
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Encrypted",type=string,JSONPath=`.status.conditions[?(@.type=="Encrypted")].status`
// +kubebuilder:printcolumn:name="KeyCurrent",type=string,JSONPath=`.status.conditions[?(@.type=="KeyCurrent")].status`
// +kubebuilder:printcolumn:name="Stale",type=integer,JSONPath=`.status.stale`
// +kubebuilder:printcolumn:name="Stage",type=string,JSONPath=`.status.rotationStage`
// +kubebuilder:printcolumn:name="Scanned",type=date,JSONPath=`.status.scannedAt`
type EncryptionStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status EncryptionStatusStatus `json:"status,omitempty"`
}

// EncryptionStatusStatus is the result of one scan.
type EncryptionStatusStatus struct {
	// CurrentKeyID is the key_id the scan counted as current.
	// +optional
	CurrentKeyID string `json:"currentKeyID,omitempty"`
	// Revision is the etcd revision the scan read.
	// +optional
	Revision int64 `json:"revision,omitempty"`
	// ScannedAt is when the scan finished.
	// +optional
	ScannedAt *metav1.Time `json:"scannedAt,omitempty"`
	// Total, Plaintext, Stale and Current sum all scanned resources;
	// stale includes plaintext. They are written even when zero, so
	// `kubectl get encryptionstatus` shows 0 rather than a blank.
	// +optional
	Total int `json:"total"`
	// +optional
	Plaintext int `json:"plaintext"`
	// +optional
	Stale int `json:"stale"`
	// +optional
	Current int `json:"current"`
	// RotationStage is current, rotated-awaiting-api-servers, migrating or
	// migrated.
	// +optional
	RotationStage string `json:"rotationStage,omitempty"`
	// NextAction tells the operator what to do next.
	// +optional
	NextAction string `json:"nextAction,omitempty"`
	// Resources has the counts per resource.
	// +optional
	// +listType=map
	// +listMapKey=resource
	Resources []ResourceEncryption `json:"resources,omitempty"`
	// Conditions are Encrypted and KeyCurrent.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ResourceEncryption counts one resource's objects.
type ResourceEncryption struct {
	Resource   string         `json:"resource"`
	Total      int            `json:"total"`
	Plaintext  int            `json:"plaintext"`
	Stale      int            `json:"stale"`
	Current    int            `json:"current"`
	ByProvider map[string]int `json:"byProvider,omitempty"`
	ByKeyID    map[string]int `json:"byKeyID,omitempty"`
}

// EncryptionStatusList is a list of EncryptionStatus.
//
// +kubebuilder:object:root=true
type EncryptionStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EncryptionStatus `json:"items"`
}

func init() {
	SchemeBuilder.Register(&EncryptionStatus{}, &EncryptionStatusList{})
}
