package syncer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

const (
	// ExpiresAtAnnotation is on every managed Secret: when it is deleted
	// unless refreshed first (RFC 3339).
	ExpiresAtAnnotation = "secrets.vaultkms.io/expires-at"
	// ManagedByLabel marks Secrets the controller owns; its cache holds
	// only those.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "vaultkms"
)

// targetName is the Secret's name.
func targetName(vs *v1alpha1.VaultSecret) string {
	if vs.Spec.Target.Name != "" {
		return vs.Spec.Target.Name
	}
	return vs.Name
}

// buildSecret returns the Secret a VaultSecret wants.
func buildSecret(vs *v1alpha1.VaultSecret, data map[string][]byte, expiresAt time.Time) *corev1.Secret {
	typ := corev1.SecretType(vs.Spec.Target.Type)
	if typ == "" {
		typ = corev1.SecretTypeOpaque
		if vs.Spec.Source.PKI != nil {
			typ = corev1.SecretTypeTLS
		}
	}
	labels := map[string]string{}
	for k, v := range vs.Spec.Target.Labels {
		labels[k] = v
	}
	labels[ManagedByLabel] = ManagedByValue
	ann := map[string]string{}
	for k, v := range vs.Spec.Target.Annotations {
		ann[k] = v
	}
	ann[ExpiresAtAnnotation] = expiresAt.UTC().Format(time.RFC3339)
	t := true
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: targetName(vs), Namespace: vs.Namespace, Labels: labels, Annotations: ann,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: v1alpha1.GroupVersion.String(), Kind: "VaultSecret", Name: vs.Name, UID: vs.UID,
				Controller: &t, BlockOwnerDeletion: &t,
			}},
		},
		Type: typ,
		Data: data,
	}
}

// dataHMAC is a keyed HMAC-SHA256 over the data in key order: it tells a
// change apart without revealing anything of the values.
func dataHMAC(key []byte, data map[string][]byte) string {
	m := hmac.New(sha256.New, key)
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(m, "%d:%s%d:", len(k), k, len(data[k]))
		m.Write(data[k])
	}
	return "hmac-sha256:" + base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// jitterFor spreads refreshes of many VaultSecrets: a stable value in
// [0, 1) from the object's UID, so a restart keeps the same spread.
func jitterFor(uid string) float64 {
	sum := sha256.Sum256([]byte(uid))
	v := uint64(sum[0])<<24 | uint64(sum[1])<<16 | uint64(sum[2])<<8 | uint64(sum[3])
	return float64(v) / float64(1<<32)
}
