package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// fresh returns s in an allocation of its own, as a JSON decoder does.
func fresh(s string) string { return string([]byte(s)) }

func sameBacking(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

func TestInternerSharesEqualStrings(t *testing.T) {
	var tb interner
	a, b := tb.str(fresh("app.kubernetes.io/managed-by")), tb.str(fresh("app.kubernetes.io/managed-by"))
	if a != b || !sameBacking(a, b) {
		t.Fatal("equal strings not shared")
	}
	long := strings.Repeat("x", internMaxLen+1)
	if c := tb.str(fresh(long)); sameBacking(c, tb.str(fresh(long))) {
		t.Fatal("a string over internMaxLen was kept")
	}
	for i := 0; i < 3*internMaxEntries; i++ {
		tb.str(fmt.Sprintf("tenant-name-%d", i))
	}
	if len(tb.strs) > internMaxEntries {
		t.Fatalf("table grew to %d entries, bound %d", len(tb.strs), internMaxEntries)
	}
}

func TestInternerSharesEqualLabelMaps(t *testing.T) {
	var tb interner
	m := func(kv ...string) map[string]string {
		out := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			out[fresh(kv[i])] = fresh(kv[i+1])
		}
		return out
	}
	a := tb.labels(m("app.kubernetes.io/managed-by", "vaultkms", "team", "a"))
	b := tb.labels(m("team", "a", "app.kubernetes.io/managed-by", "vaultkms"))
	if reflect.ValueOf(a).UnsafePointer() != reflect.ValueOf(b).UnsafePointer() {
		t.Fatal("equal label maps not shared")
	}
	if !reflect.DeepEqual(a, m("team", "a", "app.kubernetes.io/managed-by", "vaultkms")) {
		t.Fatalf("shared map changed its entries: %v", a)
	}
	// Entries that would spell alike if joined naively stay apart.
	c, d := tb.labels(m("a", "bc")), tb.labels(m("ab", "c"))
	if reflect.ValueOf(c).UnsafePointer() == reflect.ValueOf(d).UnsafePointer() {
		t.Fatal("different maps shared")
	}
	if tb.labels(nil) != nil {
		t.Fatal("nil labels became a map")
	}
	big := map[string]string{}
	for i := 0; i <= internMaxMapLen; i++ {
		big[fmt.Sprint("k", i)] = "v"
	}
	if got := tb.labels(big); !reflect.DeepEqual(got, big) || len(tb.maps) != 3 {
		t.Fatalf("a map over internMaxMapLen: %v shared maps, entries kept: %v", len(tb.maps), reflect.DeepEqual(got, big))
	}
}

// TestCacheTransformsShareAndKeep: what the transforms do to decoded
// objects changes no value (the controller reads the same objects) and
// leaves two Secrets or VaultSecrets sharing their repeated parts.
func TestCacheTransformsShareAndKeep(t *testing.T) {
	yes := true
	sec := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "s", Labels: map[string]string{"app.kubernetes.io/managed-by": "vaultkms"},
			Annotations:     map[string]string{"secrets.vaultkms.io/expires-at": "2026-12-07T03:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "secrets.vaultkms.io/v1alpha1", Kind: "VaultSecret", Name: "s", UID: "u", Controller: &yes}}},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("p")}}
	ttl := metav1.Duration{Duration: 60e9}
	vs := &v1alpha1.VaultSecret{TypeMeta: metav1.TypeMeta{APIVersion: "secrets.vaultkms.io/v1alpha1", Kind: "VaultSecret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "s", Finalizers: []string{"secrets.vaultkms.io/revoke-leases"}},
		Spec: v1alpha1.VaultSecretSpec{Auth: v1alpha1.Auth{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app"}},
			Sources: []v1alpha1.Source{{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}}}, TTL: &ttl,
			Target: v1alpha1.Target{Labels: map[string]string{"team": "a"}}},
		Status: v1alpha1.VaultSecretStatus{Conditions: []metav1.Condition{{Type: "Ready", Status: "True", Reason: "Synced", Message: "m"}},
			Sources: []v1alpha1.SourceStatus{{Hash: "h", Keys: []string{"password"}}}}}
	var s1, s2 corev1.Secret
	twoThrough(t, sec, &s1, &s2, secretCacheTransform)
	if !sameBacking(s1.Namespace, s2.Namespace) || !sameBacking(s1.OwnerReferences[0].APIVersion, s2.OwnerReferences[0].APIVersion) ||
		reflect.ValueOf(s1.Labels).UnsafePointer() != reflect.ValueOf(s2.Labels).UnsafePointer() {
		t.Fatal("two Secrets do not share namespace, owner group and labels")
	}
	var v1, v2 v1alpha1.VaultSecret
	twoThrough(t, vs, &v1, &v2, vaultSecretCacheTransform)
	if !sameBacking(v1.Finalizers[0], v2.Finalizers[0]) || !sameBacking(v1.Spec.Sources[0].KV.Mount, v2.Spec.Sources[0].KV.Mount) ||
		!sameBacking(v1.Status.Conditions[0].Reason, v2.Status.Conditions[0].Reason) ||
		reflect.ValueOf(v1.Spec.Target.Labels).UnsafePointer() != reflect.ValueOf(v2.Spec.Target.Labels).UnsafePointer() {
		t.Fatal("two VaultSecrets do not share finalizer, mount, reason and target labels")
	}
}

// twoThrough decodes in's JSON into a and into b, as the cache's informer
// decodes each object on its own, puts each through transform in place,
// and fails unless each is still equal to in.
func twoThrough[T any](t *testing.T, in, a, b *T, transform func(any) (any, error)) {
	t.Helper()
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []*T{a, b} {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
		got, err := transform(out)
		if err != nil {
			t.Fatal(err)
		}
		if got.(*T) != out || !equality.Semantic.DeepEqual(out, in) {
			t.Fatalf("transform changed the object:\n%+v\nwant\n%+v", out, in)
		}
	}
}

// TestInternerSharesAnnotationKeysInPlace: the annotations keep their map
// (the transform runs on every watch event) and get shared keys.
func TestInternerSharesAnnotationKeysInPlace(t *testing.T) {
	var tb interner
	a := map[string]string{fresh("secrets.vaultkms.io/expires-at"): "t1", fresh("team"): "x"}
	b := map[string]string{fresh("secrets.vaultkms.io/expires-at"): "t2"}
	ga, gb := tb.keys(a), tb.keys(b)
	if reflect.ValueOf(ga).UnsafePointer() != reflect.ValueOf(a).UnsafePointer() {
		t.Fatal("keys made a new map")
	}
	if !reflect.DeepEqual(ga, map[string]string{"secrets.vaultkms.io/expires-at": "t1", "team": "x"}) ||
		!reflect.DeepEqual(gb, map[string]string{"secrets.vaultkms.io/expires-at": "t2"}) {
		t.Fatalf("entries changed: %v %v", ga, gb)
	}
	var ka, kb string
	for k := range ga {
		if k != "team" {
			ka = k
		}
	}
	for k := range gb {
		kb = k
	}
	if !sameBacking(ka, kb) {
		t.Fatal("equal annotation keys not shared")
	}
}
