package syncer

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func TestDrops(t *testing.T) {
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app", UID: "uid-1"},
		Spec: v1alpha1.VaultSecretSpec{Source: v1alpha1.Source{KV: &v1alpha1.KVSource{}},
			Target: v1alpha1.Target{Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "x"}}}}
	exp := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	want := desiredSecret(vs, map[string][]byte{"password": []byte("p")}, exp, "", "")
	// What the controller's create leaves on the Secret.
	created := func() *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app",
				Labels:          map[string]string{ManagedByLabel: ManagedByValue, "team": "a"},
				Annotations:     map[string]string{ExpiresAtAnnotation: "2026-12-07T11:00:00Z", "note": "x"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VaultSecret", Name: "web", UID: "uid-1"}}},
			Data: map[string][]byte{"password": []byte("old")},
		}
	}
	cases := []struct {
		name  string
		edit  func(*corev1.Secret)
		drops bool
	}{
		{"same fields, new values", func(*corev1.Secret) {}, false},
		{"fewer fields on the Secret", func(s *corev1.Secret) { delete(s.Annotations, "note") }, false},
		{"a data key left out", func(s *corev1.Secret) { s.Data["old-key"] = nil }, true},
		{"a label left out", func(s *corev1.Secret) { s.Labels["tier"] = "x" }, true},
		{"an annotation left out", func(s *corev1.Secret) { s.Annotations[LeaseAnnotation] = "database/creds/app/x1" }, true},
		{"another owner reference", func(s *corev1.Secret) {
			s.OwnerReferences = append(s.OwnerReferences, metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "c", UID: "uid-2"})
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := created()
			tc.edit(s)
			if got := Drops(s, want); got != tc.drops {
				t.Fatalf("Drops = %v, want %v", got, tc.drops)
			}
		})
	}
}

func TestPresumeAbsent(t *testing.T) {
	kv := v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app"}}
	dyn := v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "database", Path: "creds/app"}}
	pki := v1alpha1.Source{PKI: &v1alpha1.PKISource{}}
	cases := []struct {
		name    string
		spec    v1alpha1.VaultSecretSpec
		status  v1alpha1.VaultSecretStatus
		presume bool
	}{
		{"new, one kv path", v1alpha1.VaultSecretSpec{Source: kv}, v1alpha1.VaultSecretStatus{}, true},
		{"new, kv sources", v1alpha1.VaultSecretSpec{Sources: []v1alpha1.Source{kv, kv}}, v1alpha1.VaultSecretStatus{}, true},
		{"new, dynamic: would issue before knowing", v1alpha1.VaultSecretSpec{Source: dyn}, v1alpha1.VaultSecretStatus{}, false},
		{"new, pki", v1alpha1.VaultSecretSpec{Source: pki}, v1alpha1.VaultSecretStatus{}, false},
		{"new, one dynamic among kv sources", v1alpha1.VaultSecretSpec{Sources: []v1alpha1.Source{kv, dyn}}, v1alpha1.VaultSecretStatus{}, false},
		{"wrote a Secret before", v1alpha1.VaultSecretSpec{Source: kv}, v1alpha1.VaultSecretStatus{SecretName: "web"}, false},
		{"reported on before (a conflict, say)", v1alpha1.VaultSecretSpec{Source: kv},
			v1alpha1.VaultSecretStatus{Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: "SecretConflict"}}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vs := &v1alpha1.VaultSecret{Spec: tc.spec, Status: tc.status}
			if got := presumeAbsent(vs); got != tc.presume {
				t.Fatalf("presumeAbsent = %v, want %v", got, tc.presume)
			}
		})
	}
}
