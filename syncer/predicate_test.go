package syncer

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

func TestOwnSecretWrite(t *testing.T) {
	r := &Reconciler{}
	secret := func(rv string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db", ResourceVersion: rv}}
	}
	r.secretWrites.Store(client.ObjectKey{Namespace: "app", Name: "db"}, "7")
	steps := []struct {
		name string
		rv   string
		own  bool
	}{
		{"an older version (the write's not yet seen)", "6", false},
		{"the version written", "7", true},
		{"the same version again (a resync)", "7", false},
		{"a later edit by someone else", "9", false},
	}
	for _, st := range steps {
		if got := r.ownSecretWrite(secret(st.rv)); got != st.own {
			t.Fatalf("%s: ownSecretWrite = %v, want %v", st.name, got, st.own)
		}
	}
	if r.ownSecretWrite(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "other", ResourceVersion: "7"}}) {
		t.Fatal("another Secret at the written version counted as the write")
	}
}

// TestObserveForgetsASecretWriteItsEventOutran: when the watch event of a
// write comes before the write's answer is recorded, ownSecretWrite never
// matches it; the next pass, reading the Secret at that version, forgets
// the record, so none outlives its event.
func TestObserveForgetsASecretWriteItsEventOutran(t *testing.T) {
	vs := appRoleVaultSecret("kv")
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "kv"}}
	r, _, _ := fairnessReconciler(t, time.Now(), nil, vs, sec)
	var cached corev1.Secret
	if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(sec), &cached); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(sec)
	r.secretWrites.Store(key, cached.ResourceVersion)
	if _, err := r.observe(context.Background(), vs); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.secretWrites.Load(key); ok {
		t.Fatal("the record of a write the Secret read already holds was kept")
	}
}
