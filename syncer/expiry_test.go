package syncer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// A Secret deleted at its expiry makes its VaultSecret's Ready False with
// reason Expired at once, not when the VaultSecret's own pass (which may
// wait behind an unanswering Vault) gets to it.
func TestExpirerMarksVaultSecretExpired(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db", UID: "u1", Generation: 2},
		Status: v1alpha1.VaultSecretStatus{SecretName: "db", Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: ReasonSynced, ObservedGeneration: 2, LastTransitionTime: metav1.NewTime(t0)}}}}
	yes := true
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db",
		Annotations:     map[string]string{ExpiresAtAnnotation: formatTime(t0.Add(time.Minute))},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VaultSecret", Name: "db", UID: "u1", Controller: &yes}}}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(vs, sec).WithStatusSubresource(&v1alpha1.VaultSecret{}).Build()
	e := &Expirer{Client: c, Clock: clocktesting.NewFakeClock(t0.Add(2 * time.Minute)), Log: logr.Discard()}
	if _, err := e.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(sec)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(sec), &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Secret past its expiry not deleted: %v", err)
	}
	var got v1alpha1.VaultSecret
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(vs), &got); err != nil {
		t.Fatal(err)
	}
	ready := meta.FindStatusCondition(got.Status.Conditions, "Ready")
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != ReasonExpired || ready.ObservedGeneration != 2 {
		t.Fatalf("Ready = %+v, want False/Expired for generation 2", ready)
	}
}

func TestReadyButMissing(t *testing.T) {
	ready := func(s metav1.ConditionStatus) *v1alpha1.VaultSecret {
		return &v1alpha1.VaultSecret{Status: v1alpha1.VaultSecretStatus{Conditions: []metav1.Condition{{Type: "Ready", Status: s}}}}
	}
	cases := []struct {
		name   string
		vs     *v1alpha1.VaultSecret
		exists bool
		want   bool
	}{
		{"Ready and the Secret exists", ready(metav1.ConditionTrue), true, false},
		{"Ready and the Secret is gone", ready(metav1.ConditionTrue), false, true},
		{"not Ready, Secret gone", ready(metav1.ConditionFalse), false, false},
		{"new VaultSecret, no condition yet", &v1alpha1.VaultSecret{}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ReadyButMissing(tc.vs, tc.exists); got != tc.want {
				t.Fatalf("ReadyButMissing = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestExpiryCountedOnce: a Secret that reaches its expiry without a
// refresh is counted once by expiryPolicy, whichever of the Expirer (which
// deletes it and marks Ready Expired) and the VaultSecret's own failing
// pass (which marks it too) gets there first. The count was tied to the
// Ready transition, so an expiry whose Expirer mark came first was never
// counted; and a retained one was counted again by each pass after one
// whose status write (the Expired mark) failed.
func TestExpiryCountedOnce(t *testing.T) {
	expiresAt := t0.Add(time.Minute)
	now := expiresAt.Add(time.Minute)
	for _, tc := range []struct {
		name   string
		policy string
		order  []string // "expirer", "pass", "lost pass" (its status write fails)
		want   map[string]float64
	}{
		{name: "Delete, the Expirer first", policy: v1alpha1.ExpiryDelete, order: []string{"expirer", "pass", "pass"},
			want: map[string]float64{"Delete": 1, "Retain": 0}},
		{name: "Delete, the pass first", policy: v1alpha1.ExpiryDelete, order: []string{"pass", "expirer", "pass", "expirer"},
			want: map[string]float64{"Delete": 1, "Retain": 0}},
		{name: "Retain", policy: v1alpha1.ExpiryRetain, order: []string{"expirer", "pass", "expirer", "pass"},
			want: map[string]float64{"Delete": 0, "Retain": 1}},
		{name: "Retain, the first mark lost", policy: v1alpha1.ExpiryRetain, order: []string{"lost pass", "lost pass", "pass", "pass"},
			want: map[string]float64{"Delete": 0, "Retain": 1}},
		{name: "Delete, the pass's mark lost", policy: v1alpha1.ExpiryDelete, order: []string{"lost pass", "expirer", "pass"},
			want: map[string]float64{"Delete": 1, "Retain": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ttl := metav1.Duration{Duration: time.Minute}
			vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db", UID: "u1", Generation: 1},
				Spec: v1alpha1.VaultSecretSpec{Auth: v1alpha1.Auth{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app"}},
					Source: v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app"}}, TTL: &ttl, ExpiryPolicy: tc.policy},
				Status: v1alpha1.VaultSecretStatus{SecretName: "db", ExpiresAt: ptrTime(expiresAt),
					Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: ReasonSynced, ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(t0)}}}}
			yes := true
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db",
				Annotations:     map[string]string{ExpiresAtAnnotation: formatTime(expiresAt)},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VaultSecret", Name: "db", UID: "u1", Controller: &yes}}}}
			lose := false
			r, _, rec := fairnessReconcilerWith(t, now, interceptor.Funcs{
				SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
					if lose {
						return apierrors.NewServiceUnavailable("the API server is restarting")
					}
					return c.SubResource(sub).Update(ctx, obj, opts...)
				},
			}, nil, vs, sec)
			m := NewMetrics(prometheus.NewRegistry())
			r.Metrics = m
			e := &Expirer{Client: r.Client, Clock: clocktesting.NewFakeClock(now), Log: logr.Discard(), Metrics: m}
			ctx := context.Background()
			for _, step := range tc.order {
				switch step {
				case "expirer":
					if _, err := e.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(sec)}); err != nil {
						t.Fatal(err)
					}
				case "pass", "lost pass":
					// A pass whose Vault read failed, past the expiry.
					var cur v1alpha1.VaultSecret
					if err := r.Client.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
						t.Fatal(err)
					}
					orig := cur.Status.DeepCopy()
					lose = step == "lost pass"
					if _, _, err := r.failed(ctx, &cur, orig, now, ReasonVaultUnavailable, errors.New("connection refused")); (err != nil) != lose {
						t.Fatalf("%s: error %v", step, err)
					}
					lose = false
				}
			}
			expiredEvents := 0
			for len(rec.Events) > 0 {
				if strings.Contains(<-rec.Events, " "+ReasonExpired+" ") {
					expiredEvents++
				}
			}
			if want := int(tc.want[v1alpha1.ExpiryRetain]); expiredEvents != want && tc.policy == v1alpha1.ExpiryRetain {
				t.Errorf("%d Expired events from the passes %v, want %d", expiredEvents, tc.order, want)
			}
			for policy, want := range tc.want {
				if got := testutil.ToFloat64(m.expired.WithLabelValues(policy)); got != want {
					t.Errorf("vaultkms_controller_secrets_expired_total{policy=%q} = %v after %v, want %v", policy, got, tc.order, want)
				}
			}
		})
	}
}
