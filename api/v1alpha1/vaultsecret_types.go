package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VaultSecret turns data read from Vault into a Kubernetes Secret that
// lives only as long as Vault says it is valid. The controller reads Vault
// under the identity named in spec.auth (or in the VaultAuth spec.authRef
// names), in the VaultSecret's own namespace, never under its own.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vsec
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VaultSecret struct {
	// (The Expires column is a string: as a "date" column kubectl would
	// print the future expiry as "<invalid>", since it shows ages.)

	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VaultSecretSpec   `json:"spec"`
	Status VaultSecretStatus `json:"status,omitempty"`
}

// VaultSecretSpec says where the data comes from, as whom, and where it goes.
// +kubebuilder:validation:XValidation:rule="!has(self.expiryPolicy) || self.expiryPolicy != 'Retain' || (has(self.sources) ? self.sources.all(s, has(s.kv)) : (has(self.source) && has(self.source.kv)))",message="expiryPolicy Retain is only for kv sources (dynamic and pki data is dead at expiry): set spec.expiryPolicy to Delete or remove it",fieldPath=".expiryPolicy",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="has(self.source) != has(self.sources)",message="spec needs exactly one of source (one Vault path) or sources (a list of 1 to 16 merged into one Secret)",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.refreshInterval) || (has(self.sources) ? self.sources.exists(s, has(s.kv)) : (has(self.source) && has(self.source.kv)))",message="refreshInterval is for kv sources (dynamic and pki sources refresh on their lease): remove spec.refreshInterval",fieldPath=".refreshInterval",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.refreshInterval) || !has(self.ttl) || duration(self.refreshInterval) < duration(self.ttl)",message="refreshInterval must be shorter than ttl, or the Secret expires before it is refreshed: lower spec.refreshInterval or raise spec.ttl",fieldPath=".refreshInterval",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="has(self.auth) || has(self.authRef)",message="spec needs one of auth (an inline login) or authRef (the name of a VaultAuth in this namespace); neither is set",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!(has(self.auth) && has(self.authRef))",message="spec.auth and spec.authRef are both set: keep one (authRef names a VaultAuth in this namespace; auth logs in inline)",fieldPath=".authRef",reason=FieldValueForbidden
type VaultSecretSpec struct {
	// Auth logs in inline, for this VaultSecret alone. Exactly one of auth
	// and authRef is set.
	// +optional
	Auth Auth `json:"auth,omitzero"` // omitzero: a Go client setting only authRef sends no auth at all
	// AuthRef names a VaultAuth of the same namespace to log in with; its
	// one token serves every VaultSecret that names it.
	// +optional
	AuthRef *AuthRef `json:"authRef,omitempty"`
	// Source is the one Vault path the Secret holds. Exactly one of source
	// and sources is set.
	// +optional
	Source Source `json:"source,omitzero"`
	// Sources are several Vault paths merged into one Secret, each read on
	// its own schedule (and, for dynamic and pki, with its own lease). The
	// Secret holds the union of their keys; a key two sources both give is
	// reported as KeyConflict and no Secret is written. The Secret expires
	// at the earliest of its sources' expiries.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Sources []Source `json:"sources,omitempty"`
	// RefreshInterval is how often kv sources are read, independent of
	// ttl (which stays the Secret's lifetime after the last successful
	// read); default two thirds of ttl.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s')",message="refreshInterval must be at least 5s, such as 20s or 10m"
	// +optional
	RefreshInterval *metav1.Duration `json:"refreshInterval,omitempty"`
	// TTL is how long the Secret lives: for kv, after the last successful
	// read; for pki, the requested certificate lifetime; for dynamic
	// sources, the lifetime wanted before new credentials are issued.
	// At least 10s, so that no VaultSecret can turn into a stream of
	// Vault requests.
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('8760h')",message="ttl must be between 10s and 8760h, such as 30s or 1h"
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`
	// Target describes the Secret written; its name defaults to the
	// VaultSecret's.
	// +optional
	Target Target `json:"target,omitempty"`
	// RolloutRestartTargets are restarted when the Secret's data changes.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	RolloutRestartTargets []RolloutRestartTarget `json:"rolloutRestartTargets,omitempty"`
	// RevokeGracePeriod is how long an old dynamic lease lives after new
	// credentials replaced it, so that pods have the new Secret (kubelet
	// propagates changes within a minute or two); default two minutes,
	// never past the old lease's own end.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('8760h')",message="revokeGracePeriod must be a duration between 0s and 8760h, such as 2m"
	// +optional
	RevokeGracePeriod *metav1.Duration `json:"revokeGracePeriod,omitempty"`
	// ExpiryPolicy says what happens to the Secret at expiry when no
	// refresh succeeded in time (Vault unreachable or refusing): Delete
	// (default) deletes it, so nothing outlives what Vault vouches for;
	// Retain keeps its last data while the VaultSecret reports
	// Ready=False with reason Expired, until the next successful read.
	// Retain is for kv sources only: dynamic and pki data is dead at
	// expiry.
	// +kubebuilder:validation:Enum=Delete;Retain
	// +kubebuilder:default=Delete
	// +optional
	ExpiryPolicy string `json:"expiryPolicy,omitempty"`
	// RevokeOnDelete revokes the dynamic lease when the VaultSecret is
	// deleted (default true). With false, deletion never waits on Vault and
	// the lease ends on its own.
	// +kubebuilder:default=true
	// +optional
	RevokeOnDelete *bool `json:"revokeOnDelete,omitempty"`
}

// Values of spec.expiryPolicy.
const (
	// ExpiryDelete deletes the Secret at expiry (the default).
	ExpiryDelete = "Delete"
	// ExpiryRetain keeps a kv Secret's last data past expiry.
	ExpiryRetain = "Retain"
)

// Auth names exactly one way to log in to Vault.
// +kubebuilder:validation:XValidation:rule="has(self.kubernetes) != has(self.appRole)",message="auth needs exactly one of kubernetes or appRole"
type Auth struct {
	// +optional
	Kubernetes *KubernetesAuth `json:"kubernetes,omitempty"`
	// +optional
	AppRole *AppRoleAuth `json:"appRole,omitempty"`
}

// AuthRef names a VaultAuth. There is no namespace field: a VaultSecret
// only ever uses a VaultAuth of its own namespace.
type AuthRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
}

// KubernetesAuth logs in with a short-lived token of a service account in
// the VaultSecret's own namespace.
type KubernetesAuth struct {
	// Role is the Vault kubernetes auth role.
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
	// +kubebuilder:default=kubernetes
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$`
	// +optional
	Mount string `json:"mount,omitempty"`
	// Audiences of the requested token; default the controller's
	// --token-audience ("vault"), so the token is not one the API server
	// itself accepts. The Vault role's `audience` must match.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +optional
	Audiences []string `json:"audiences,omitempty"`
}

// AppRoleAuth logs in with a role ID and secret ID kept in a Secret of the
// same namespace.
type AppRoleAuth struct {
	// +kubebuilder:validation:MinLength=1
	SecretRef string `json:"secretRef"`
	// RoleIDKey and SecretIDKey name the keys in that Secret.
	// +kubebuilder:default=role-id
	// +optional
	RoleIDKey string `json:"roleIDKey,omitempty"`
	// +kubebuilder:default=secret-id
	// +optional
	SecretIDKey string `json:"secretIDKey,omitempty"`
	// +kubebuilder:default=approle
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$`
	// +optional
	Mount string `json:"mount,omitempty"`
}

// Source names exactly one kind of Vault data.
// +kubebuilder:validation:XValidation:rule="(has(self.kv) ? 1 : 0) + (has(self.dynamic) ? 1 : 0) + (has(self.pki) ? 1 : 0) == 1",message="source needs exactly one of kv, dynamic or pki"
type Source struct {
	// +optional
	KV *KVSource `json:"kv,omitempty"`
	// +optional
	Dynamic *DynamicSource `json:"dynamic,omitempty"`
	// +optional
	PKI *PKISource `json:"pki,omitempty"`
}

// KVSource reads a KV secret (version 2, or version 1).
type KVSource struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$`
	// +kubebuilder:validation:XValidation:rule="!self.lowerAscii().matches('^(auth|sys)(/|$)')",message="mounts under auth/ and sys/ are Vault's own endpoints, not secrets engines (a read there can return the tenant's own token): name the mount of a secrets engine, such as secret"
	Mount string `json:"mount"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.contains('..')",message="path is relative to the mount: no leading '/' and no '..'"
	Path string `json:"path"`
	// Version pins a KV v2 version; 0 or unset reads the latest.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Version int `json:"version,omitempty"`
	// KVVersion is 2 (default) or 1.
	// +kubebuilder:validation:Enum=1;2
	// +kubebuilder:default=2
	// +optional
	KVVersion int `json:"kvVersion,omitempty"`
}

// DynamicSource reads a leased secret, such as database credentials.
type DynamicSource struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$`
	// +kubebuilder:validation:XValidation:rule="!self.lowerAscii().matches('^(auth|sys)(/|$)')",message="mounts under auth/ and sys/ are Vault's own endpoints, not secrets engines (a read there can return the tenant's own token): name the mount of a secrets engine, such as secret"
	Mount string `json:"mount"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.contains('..')",message="path is relative to the mount: no leading '/' and no '..'"
	Path string `json:"path"`
}

// PKISource issues a certificate into a kubernetes.io/tls Secret.
type PKISource struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$`
	// +kubebuilder:validation:XValidation:rule="!self.lowerAscii().matches('^(auth|sys)(/|$)')",message="mounts under auth/ and sys/ are Vault's own endpoints, not secrets engines (a read there can return the tenant's own token): name the mount of a secrets engine, such as secret"
	Mount string `json:"mount"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.@-]+$`
	Role string `json:"role"`
	// +kubebuilder:validation:MinLength=1
	CommonName string `json:"commonName"`
	// +optional
	AltNames []string `json:"altNames,omitempty"`
	// +optional
	IPSans []string `json:"ipSans,omitempty"`
}

// Target shapes the Secret.
type Target struct {
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	Name string `json:"name,omitempty"`
	// Type of the Secret; default Opaque (kubernetes.io/tls for pki).
	// +kubebuilder:validation:Enum=Opaque;kubernetes.io/tls;kubernetes.io/dockerconfigjson;kubernetes.io/basic-auth;kubernetes.io/ssh-auth
	// +optional
	Type string `json:"type,omitempty"`
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// Template renders extra keys with Go text/template over the Vault
	// data (`{{ .username }}`): key name → template. At most 20 keys of
	// at most 4 KiB each; a render stops at 64 KiB of output per key or
	// after a bounded amount of work, and is reported as InvalidSpec.
	// +kubebuilder:validation:MaxProperties=20
	// (Key names are checked by the controller, InvalidSpec: a regular
	// expression over map keys of unbounded length would exceed CEL's
	// cost budget.)
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 4096)",message="each template must be at most 4096 bytes"
	// +optional
	Template map[string]string `json:"template,omitempty"`
	// Adopt takes over an existing Secret of the target name that no
	// VaultSecret manages (one written by another operator, during a
	// migration): its data is replaced at the first successful read, so
	// applications never see it missing. Without adopt, such a Secret is
	// left alone and reported as a conflict.
	// +optional
	Adopt bool `json:"adopt,omitempty"`
}

// RolloutRestartTarget is a workload, or the workloads a label selector
// picks in the VaultSecret's namespace, restarted when the data changes.
// +kubebuilder:validation:XValidation:rule="has(self.name) != has(self.selector)",message="a rollout restart target needs exactly one of name (one workload) or selector (the workloads of that kind whose labels match)"
type RolloutRestartTarget struct {
	// +kubebuilder:validation:Enum=Deployment;StatefulSet;DaemonSet
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Name string `json:"name,omitempty"`
	// Selector picks the workloads of this kind by label.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// VaultSecretStatus reports the last sync.
type VaultSecretStatus struct {
	// ObservedGeneration is the generation the controller last looked at
	// ("seen"); AppliedGeneration the one whose Secret was last written
	// successfully ("applied"). A failed apply leaves them apart, and the
	// controller retries until they meet.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	AppliedGeneration int64 `json:"appliedGeneration,omitempty"`
	// SourceHash fingerprints the spec fields that decide the Secret's
	// data (auth, source, ttl, target name, type and template) as last
	// applied: a change of anything else updates metadata only.
	// +optional
	SourceHash string `json:"sourceHash,omitempty"`
	// MetadataHash fingerprints target.labels and target.annotations as
	// last applied.
	// +optional
	MetadataHash string `json:"metadataHash,omitempty"`
	// LeaseJournal is the lease journal of spec.source (pendingLease,
	// lease, revokeFailures); spec.sources keep one each in sources[i].
	LeaseJournal `json:",inline"`
	// ExpiresAt is when the Secret is deleted unless refreshed first.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// RefreshAt is when the controller reads Vault next.
	// +optional
	RefreshAt *metav1.Time `json:"refreshAt,omitempty"`
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
	// DataHMAC is a keyed HMAC of the Secret's data, for change detection;
	// it reveals nothing of the data.
	// +optional
	DataHMAC string `json:"dataHMAC,omitempty"`
	// SecretName is the Secret written.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// RestartPendingSince is when the Secret last got new data from Vault
	// whose rollout restarts have not all been carried out yet; it is
	// cleared once every target was restarted (or its restart failed for
	// good, told by a RestartFailed event). A controller that starts and
	// finds it set carries out the restarts the process before it owed.
	// +optional
	RestartPendingSince *metav1.Time `json:"restartPendingSince,omitempty"`
	// Sources is the schedule of each of spec.sources, in its order.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Sources []SourceStatus `json:"sources,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SourceStatus is the last read of one of spec.sources.
type SourceStatus struct {
	// Hash fingerprints the source's spec as last read: an edit of one
	// source reads only that one.
	Hash string `json:"hash"`
	// Keys are the Secret's keys this source gave (names, never values):
	// what a refresh of this source alone replaces.
	// +optional
	Keys []string `json:"keys,omitempty"`
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
	// RefreshAt is when this source is read next.
	// +optional
	RefreshAt *metav1.Time `json:"refreshAt,omitempty"`
	// ExpiresAt is when this source's data stops being valid; the Secret
	// expires at the earliest of its sources'.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// LeaseJournal is this source's own lease journal (dynamic sources):
	// its pending, current and replaced leases, with the same rules as
	// the journal of spec.source.
	LeaseJournal `json:",inline"`
}

// VaultSecretList is a list of VaultSecret.
//
// +kubebuilder:object:root=true
type VaultSecretList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VaultSecret `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VaultSecret{}, &VaultSecretList{})
}
