package syncer

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func TestStatusOnlyUpdate(t *testing.T) {
	now := metav1.Now()
	base := func() *v1alpha1.VaultSecret {
		return &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "y", Generation: 3, ResourceVersion: "10",
			Labels: map[string]string{"a": "1"}, Annotations: map[string]string{"b": "2"}, Finalizers: []string{Finalizer}}}
	}
	cases := []struct {
		name   string
		change func(*v1alpha1.VaultSecret)
		want   bool
	}{
		{"status and resourceVersion only", func(v *v1alpha1.VaultSecret) { v.ResourceVersion = "11"; v.Status.SecretName = "s" }, true},
		{"spec (generation)", func(v *v1alpha1.VaultSecret) { v.Generation = 4 }, false},
		{"a label", func(v *v1alpha1.VaultSecret) { v.Labels["a"] = "2" }, false},
		{"an annotation", func(v *v1alpha1.VaultSecret) { v.Annotations = nil }, false},
		{"finalizers", func(v *v1alpha1.VaultSecret) { v.Finalizers = nil }, false},
		{"deletion", func(v *v1alpha1.VaultSecret) { v.DeletionTimestamp = &now }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cur := base()
			tc.change(cur)
			if got := StatusOnlyUpdate(base(), cur); got != tc.want {
				t.Errorf("StatusOnlyUpdate = %v, want %v", got, tc.want)
			}
		})
	}
}
