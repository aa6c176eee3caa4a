package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VaultAuth is one way to log in to Vault, shared by every VaultSecret of
// its namespace that names it in spec.authRef: the controller logs in once
// per VaultAuth and renews that one token, however many VaultSecrets use
// it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vauth
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="VaultSecrets",type=integer,JSONPath=`.status.vaultSecrets`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VaultAuth struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VaultAuthSpec   `json:"spec"`
	Status VaultAuthStatus `json:"status,omitempty"`
}

// VaultAuthSpec names exactly one login method. Every field is optional
// and the rule counts methods only, so fields added later (such as the
// connection to log in to) leave existing VaultAuths valid.
// +kubebuilder:validation:XValidation:rule="(has(self.kubernetes) ? 1 : 0) + (has(self.appRole) ? 1 : 0) + (has(self.jwt) ? 1 : 0) == 1",message="spec needs exactly one of kubernetes, appRole or jwt"
type VaultAuthSpec struct {
	// Kubernetes logs in at auth/kubernetes with a short-lived token of a
	// service account of this namespace (Vault checks it with TokenReview).
	// +optional
	Kubernetes *KubernetesAuth `json:"kubernetes,omitempty"`
	// AppRole logs in with a role ID and secret ID kept in a Secret of
	// this namespace.
	// +optional
	AppRole *AppRoleAuth `json:"appRole,omitempty"`
	// JWT logs in at auth/jwt with a short-lived token of a service
	// account of this namespace, for a Vault that trusts the cluster's
	// OIDC issuer instead of calling TokenReview.
	// +optional
	JWT *JWTAuth `json:"jwt,omitempty"`
	// ConnectionRef names the ClusterVaultConnection to log in to; without
	// it, the Vault of the controller's flags (the connection "default").
	// +optional
	ConnectionRef *ConnectionRef `json:"connectionRef,omitempty"`
}

// ConnectionRef names a ClusterVaultConnection.
type ConnectionRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
}

// JWTAuth logs in with a projected service account token at a Vault jwt
// auth mount whose role binds the token's audience and subject.
type JWTAuth struct {
	// Role is the Vault jwt auth role.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.@-]+$`
	Role string `json:"role"`
	// ServiceAccountName is the service account whose token is used.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ServiceAccountName string `json:"serviceAccountName"`
	// Mount is the auth method's mount path.
	// +kubebuilder:default=jwt
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$`
	// +optional
	Mount string `json:"mount,omitempty"`
	// Audiences of the requested token; default the controller's
	// --token-audience ("vault"). The Vault role's bound_audiences must
	// match, and each must be in the controller's --allowed-audiences.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +optional
	Audiences []string `json:"audiences,omitempty"`
}

// VaultAuthStatus reports the last login and the VaultAuth's users.
type VaultAuthStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// VaultSecrets is how many VaultSecrets of this namespace name this
	// VaultAuth in spec.authRef.
	// +optional
	VaultSecrets int32 `json:"vaultSecrets"`
	// Conditions: Ready is the outcome of the last login, with the reason
	// Vault gave for a refusal.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VaultAuthList is a list of VaultAuth.
//
// +kubebuilder:object:root=true
type VaultAuthList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VaultAuth `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VaultAuth{}, &VaultAuthList{})
}
