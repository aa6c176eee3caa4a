package main

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestHMACKey(t *testing.T) {
	ctx := context.Background()
	t.Run("created when missing, then read back", func(t *testing.T) {
		kube := fake.NewClientset()
		k1, err := hmacKey(ctx, kube, "ns", "k")
		if err != nil || len(k1) != 32 {
			t.Fatalf("key %d bytes, %v", len(k1), err)
		}
		k2, err := hmacKey(ctx, kube, "ns", "k")
		if err != nil || string(k1) != string(k2) {
			t.Fatalf("second start got another key (%v)", err)
		}
	})
	// Before the fix a short key made hmacKey call itself until the stack
	// overflowed.
	for _, n := range []int{0, 31} {
		kube := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "k"}, Data: map[string][]byte{"key": make([]byte, n)}})
		_, err := hmacKey(ctx, kube, "ns", "k")
		if err == nil || !strings.Contains(err.Error(), "at least 32") || !strings.Contains(err.Error(), "ns/k") {
			t.Fatalf("%d-byte key: err = %v, want an error naming the Secret and the fix", n, err)
		}
	}
}
