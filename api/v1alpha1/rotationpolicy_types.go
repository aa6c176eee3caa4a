package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RotationStage is where an automatic rotation cycle stands.
// +kubebuilder:validation:Enum=Idle;Rotating;WaitingForAPIServers;Reencrypting;Verifying;WaitingToTrim;Trimming;Done;Stopped
type RotationStage string

// The stages of a RotationPolicy's cycle, in order. Stopped is reached from
// any of them when a gate fails; it stays until the operator resumes.
const (
	StageIdle                 RotationStage = "Idle"
	StageRotating             RotationStage = "Rotating"
	StageWaitingForAPIServers RotationStage = "WaitingForAPIServers"
	StageReencrypting         RotationStage = "Reencrypting"
	StageVerifying            RotationStage = "Verifying"
	StageWaitingToTrim        RotationStage = "WaitingToTrim"
	StageTrimming             RotationStage = "Trimming"
	StageDone                 RotationStage = "Done"
	StageStopped              RotationStage = "Stopped"
)

// Condition types of a RotationPolicy.
const (
	// ConditionReady is True while the policy runs normally (idle, done,
	// or between stages) and False when it is stopped or suspended.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a cycle is under way.
	ConditionProgressing = "Progressing"
	// ConditionStopped is True when a gate failed; its reason names the
	// gate and its message the cause and the fix.
	ConditionStopped = "Stopped"
)

// Reasons of a RotationPolicy's conditions and events. The Gate* reasons
// name the gate that stopped a cycle.
const (
	ReasonIdle              = "Idle"
	ReasonSuspended         = "Suspended"
	ReasonCycleDone         = "CycleDone"
	ReasonResumed           = "Resumed"
	ReasonRetrying          = "Retrying"
	ReasonRotated           = "Rotated"
	ReasonAdoptedRotation   = "AdoptedRotation"
	ReasonTrimmed           = "Trimmed"
	ReasonGateKeyMismatch   = "KeyMismatch"
	ReasonGateDuplicate     = "DuplicatePolicy"
	ReasonGatePrefix        = "PrefixCheckFailed"
	ReasonGateNoEvidence    = "NoEvidence"
	ReasonGateUnreadable    = "UnreadableKeyID"
	ReasonGateVaultRotate   = "VaultRotateRefused"
	ReasonGateVaultTrim     = "VaultTrimRefused"
	ReasonGateAPIServers    = "APIServerGateFailed"
	ReasonGateReencrypt     = "ReencryptFailed"
	ReasonGateStaleRemain   = "StaleObjectsRemain"
	ReasonGateKeyChanged    = "KeyChanged"
	ReasonGateNothingToTrim = "NothingToTrim"
	ReasonNotStopped        = "NotStopped"
)

// ResumeAnnotation resumes a Stopped RotationPolicy: set it to any new
// value (a timestamp, say). Changing the spec resumes it too.
const ResumeAnnotation = "secrets.vaultkms.io/resume"

// RotationPolicy turns on automatic rotation of one Transit key: the
// auditor rotates it every rotateEvery, waits until every API server uses
// the new version, re-encrypts what is stale through the API server,
// verifies the whole etcd prefix, and after trimAfter raises the key's
// min_decryption_version, each step behind the same gates as
// `kubectl vaultkms trim`. Nothing rotates unless a RotationPolicy exists.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=rotpol
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Key",type=string,JSONPath=`.spec.transit.key`
// +kubebuilder:printcolumn:name="Every",type=string,JSONPath=`.spec.rotateEvery`
// +kubebuilder:printcolumn:name="Stage",type=string,JSONPath=`.status.stage`
// +kubebuilder:printcolumn:name="Version",type=integer,JSONPath=`.status.currentVersion`
// +kubebuilder:printcolumn:name="MinDecrypt",type=integer,JSONPath=`.status.minDecryptionVersion`
// +kubebuilder:printcolumn:name="Next",type=string,JSONPath=`.status.nextRotationTime`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Stopped")].reason`,priority=0
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=`.spec.suspend`,priority=1
type RotationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec RotationPolicySpec `json:"spec"`
	// +optional
	Status RotationPolicyStatus `json:"status,omitempty"`
}

// RotationPolicySpec is what the operator asks for.
// +kubebuilder:validation:XValidation:rule="!has(self.apiServers) || !has(self.apiServers.settleTime) || !has(self.apiServers.timeout) || duration(self.apiServers.timeout) >= duration(self.apiServers.settleTime) + duration('2m')",message="apiServers.timeout must be at least apiServers.settleTime + 2m: the gate passes no sooner than the settle time after every API server first reports the new key_id, up to 2m after the rotation (kube-apiserver polls the plugin once a minute)"
type RotationPolicySpec struct {
	// Transit names the key to rotate: the one the plugin wraps DEK seeds
	// with and the auditor scans for.
	Transit TransitKeyRef `json:"transit"`
	// Provider is the KMS v2 provider name in the EncryptionConfiguration
	// (default vault).
	// +optional
	// +kubebuilder:default=vault
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!self.contains(':')",message="provider must not contain ':'"
	Provider string `json:"provider,omitempty"`
	// RotateEvery is how long after the last rotation the next one is due
	// (at least 10s; weeks or months in production, such as 720h). The
	// first cycle counts from the creation time of the key's latest
	// version.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('87600h')",message="rotateEvery must be a duration between 10s and 87600h, such as 720h"
	RotateEvery metav1.Duration `json:"rotateEvery"`
	// Reencrypt paces the no-op updates that re-encrypt stale objects
	// through the API server.
	// +optional
	Reencrypt ReencryptPacing `json:"reencrypt,omitempty"`
	// TrimAfter is how long after every stale object was re-encrypted and
	// verified the old versions are retired (min_decryption_version
	// raised). Default 24h; 0s trims as soon as the gates pass.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('87600h')",message="trimAfter must be a duration between 0s and 87600h, such as 24h"
	TrimAfter *metav1.Duration `json:"trimAfter,omitempty"`
	// APIServers configures the API server gate.
	// +optional
	APIServers APIServerGate `json:"apiServers,omitempty"`
	// Suspend pauses the policy at the stage it is in; clearing it
	// resumes a Stopped policy too.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// TransitKeyRef names a Transit key.
type TransitKeyRef struct {
	// Mount is the Transit mount path (default transit).
	// +optional
	// +kubebuilder:default=transit
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._/-]+$`
	Mount string `json:"mount,omitempty"`
	// Key is the Transit key name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._-]+$`
	Key string `json:"key"`
	// Namespace is the Vault Enterprise namespace the plugin records in
	// key_id (empty for root).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Namespace string `json:"namespace,omitempty"`
}

// ReencryptPacing bounds the writes re-encryption makes.
type ReencryptPacing struct {
	// QPS is how many objects per second are rewritten (default 20).
	// +optional
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	QPS int32 `json:"qps,omitempty"`
	// Burst is how many rewrites may start at once (default 1).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Burst int32 `json:"burst,omitempty"`
}

// APIServerGate says which API servers must report the new key_id, and
// for how long, before objects are re-encrypted and before trim.
type APIServerGate struct {
	// SettleTime is how long every API server must have reported the new
	// key_id (default 5m, at least 4m). The minimum is kube-apiserver's:
	// after a failed key switch it may keep writing under the old key for
	// about 3 minutes, and it sees a new key_id only at its next Status
	// poll (1 minute).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('4m') && duration(self) <= duration('24h')",message="apiServers.settleTime must be a duration between 4m and 24h, such as 5m: kube-apiserver may keep writing under the old key for about 3m after a failed key switch, plus one Status poll (1m)"
	SettleTime *metav1.Duration `json:"settleTime,omitempty"`
	// Timeout is how long after the rotation every API server may take to
	// report the new key_id and settle before the cycle stops (default
	// 15m). It must be at least settleTime + 2m: kube-apiserver polls the
	// plugin about once a minute, so its first report of the new key_id
	// can come up to 2m after the rotation. The auditor refuses a shorter
	// one before rotating, also when one of the two is left at its default.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('24h')",message="apiServers.timeout must be a duration between 10s and 24h, such as 15m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// MetricsURLs lists the /metrics URL of every API server. Empty finds
	// them from the default/kubernetes EndpointSlices; list them when the
	// API servers sit behind a load balancer.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:items:Pattern=`^https://`
	// +listType=set
	MetricsURLs []string `json:"metricsURLs,omitempty"`
}

// RotationPolicyStatus is where the cycle stands. It is the auditor's only
// memory: a restart or a new leader resumes from here.
type RotationPolicyStatus struct {
	// Stage is where the cycle stands.
	// +optional
	Stage RotationStage `json:"stage,omitempty"`
	// StoppedStage is the stage a Stopped cycle failed in.
	// +optional
	StoppedStage RotationStage `json:"stoppedStage,omitempty"`
	// StageTime is when the current stage was entered.
	// +optional
	StageTime *metav1.Time `json:"stageTime,omitempty"`
	// CurrentVersion is the key's latest version when last read.
	// +optional
	CurrentVersion int `json:"currentVersion,omitempty"`
	// MinDecryptionVersion is the key's min_decryption_version when last
	// read.
	// +optional
	MinDecryptionVersion int `json:"minDecryptionVersion,omitempty"`
	// TargetVersion is the version this cycle rotates to and retires
	// everything below.
	// +optional
	TargetVersion int `json:"targetVersion,omitempty"`
	// LastRotationTime is when this policy last rotated (or adopted a
	// rotation).
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`
	// NextRotationTime is when the next rotation is due.
	// +optional
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`
	// VerifiedTime is when the scan after re-encryption found nothing
	// below the target version; trim waits trimAfter from here.
	// +optional
	VerifiedTime *metav1.Time `json:"verifiedTime,omitempty"`
	// LastTrimTime is when min_decryption_version was last raised.
	// +optional
	LastTrimTime *metav1.Time `json:"lastTrimTime,omitempty"`
	// Reencrypted counts the objects rewritten in this cycle.
	// +optional
	Reencrypted int `json:"reencrypted,omitempty"`
	// ResumedWith is the value of the resume annotation last acted on.
	// +optional
	ResumedWith string `json:"resumedWith,omitempty"`
	// ObservedGeneration is the spec generation last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions are Ready, Progressing and Stopped.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RotationPolicyList is a list of RotationPolicy.
//
// +kubebuilder:object:root=true
type RotationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RotationPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RotationPolicy{}, &RotationPolicyList{})
}
