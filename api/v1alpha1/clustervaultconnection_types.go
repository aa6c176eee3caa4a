package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterVaultConnection is a Vault an administrator allows VaultAuths of
// some namespaces to log in to. It is cluster-scoped so that a tenant can
// never make the controller send a token to an address no administrator
// wrote: a VaultAuth names a connection, never an address.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=cvconn
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterVaultConnection struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterVaultConnectionSpec   `json:"spec"`
	Status ClusterVaultConnectionStatus `json:"status,omitempty"`
}

// ClusterVaultConnectionSpec is where Vault is and who may use it.
type ClusterVaultConnectionSpec struct {
	// Address is Vault's address, https:// (plain http:// only to a
	// loopback address), or several separated by commas, tried in order
	// when one cannot be reached: the rules of the controller's
	// --vault-addr.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.split(',').all(a, a.trim().startsWith('https://') || a.trim().startsWith('http://'))",message="address must be https://host:port (http:// only to a loopback address), or several separated by commas"
	Address string `json:"address"`
	// CACert is the CA of Vault's serving certificate, read from a Secret
	// (re-read when it changes); without it, the system's roots.
	// +optional
	CACert *CACertSource `json:"caCert,omitempty"`
	// Namespace is the Vault Enterprise namespace to use.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// AllowedNamespaces selects the Kubernetes namespaces whose VaultAuths
	// may use this connection. Unset allows none; {} allows every
	// namespace. A VaultAuth elsewhere is Ready=False with reason
	// ConnectionNotAllowed, and nothing is sent to this address for it.
	// +optional
	AllowedNamespaces *metav1.LabelSelector `json:"allowedNamespaces,omitempty"`
}

// CACertSource says where a CA certificate is kept.
type CACertSource struct {
	SecretRef SecretKeyRef `json:"secretRef"`
}

// SecretKeyRef names one key of a Secret in a given namespace.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
	// +kubebuilder:default=ca.crt
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +optional
	Key string `json:"key,omitempty"`
}

// ClusterVaultConnectionStatus reports whether the connection can be used.
type ClusterVaultConnectionStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready says the address parsed and the CA was loaded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ClusterVaultConnectionList is a list of ClusterVaultConnection.
//
// +kubebuilder:object:root=true
type ClusterVaultConnectionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterVaultConnection `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterVaultConnection{}, &ClusterVaultConnectionList{})
}
