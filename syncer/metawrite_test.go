package syncer

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	pbserializer "k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// secretOf must describe the very Secret the apply configuration does,
// as a JSON round trip of it (the way creates were built before) would.
func TestSecretOf(t *testing.T) {
	exp := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	data := map[string][]byte{"password": []byte("p"), "user": []byte("u")}
	for _, tc := range []struct {
		name  string
		vs    func(*v1alpha1.VaultSecret)
		lease string
	}{
		{name: "kv, defaults", vs: func(*v1alpha1.VaultSecret) {}},
		{name: "target name, labels, annotations", vs: func(vs *v1alpha1.VaultSecret) {
			vs.Spec.Target = v1alpha1.Target{Name: "other", Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "n"}}
		}},
		{name: "a lease and a type", lease: "database/creds/app/abc", vs: func(vs *v1alpha1.VaultSecret) {
			vs.Spec.Target.Type = string(corev1.SecretTypeBasicAuth)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db", UID: "u-1"}}
			tc.vs(vs)
			want := desiredSecret(vs, data, exp, tc.lease, "")
			body, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			var viaJSON corev1.Secret
			if err := json.Unmarshal(body, &viaJSON); err != nil {
				t.Fatal(err)
			}
			viaJSON.TypeMeta = metav1.TypeMeta{}
			if got := secretOf(want); !equality.Semantic.DeepEqual(&viaJSON, got) {
				t.Errorf("secretOf differs from the apply configuration's JSON:\n json     %+v\n secretOf %+v", &viaJSON, got)
			}
		})
	}
}

// metaCodec is a scheme that encodes PartialObjectMetadata, and the
// controller's decoder of it.
func metaCodec(tb testing.TB) (*runtime.Scheme, runtime.Decoder) {
	tb.Helper()
	s := runtime.NewScheme()
	if err := metav1.AddMetaToScheme(s); err != nil {
		tb.Fatal(err)
	}
	dec, err := newMetaDecoder()
	if err != nil {
		tb.Fatal(err)
	}
	return s, dec
}

// An answer is taken in either form the API server may choose, and only
// when it is metadata alone.
func TestAnsweredMetadata(t *testing.T) {
	protobuf := func(scheme *runtime.Scheme, o runtime.Object) []byte {
		var b bytes.Buffer
		if err := pbserializer.NewSerializer(scheme, scheme).Encode(o, &b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	jsonOf := func(o runtime.Object) []byte {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	meta, dec := metaCodec(t)
	core := runtime.NewScheme()
	_ = corev1.AddToScheme(core)
	part := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"},
		ObjectMeta: metav1.ObjectMeta{Name: "s", ResourceVersion: "8", Annotations: map[string]string{ExpiresAtAnnotation: "2026-12-07T10:00:00Z"}}}
	whole := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "s", ResourceVersion: "7"}, Data: map[string][]byte{"k": []byte("v")}}
	for _, tc := range []struct {
		name   string
		raw    []byte
		wantRV string
	}{
		{name: "metadata as protobuf", raw: protobuf(meta, part), wantRV: "8"},
		{name: "metadata as JSON", raw: jsonOf(part), wantRV: "8"},
		{name: "a whole Secret as protobuf", raw: protobuf(core, whole)},
		{name: "a whole Secret as JSON", raw: jsonOf(whole)},
		{name: "metadata without a resourceVersion", raw: protobuf(meta, &metav1.PartialObjectMetadata{
			TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"}, ObjectMeta: metav1.ObjectMeta{Name: "s"}})},
		{name: "not an object", raw: []byte("k8s\x00garbage")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m metav1.ObjectMeta
			err := answeredMetadata(dec, tc.raw, &m)
			if tc.wantRV == "" {
				if err == nil {
					t.Fatalf("taken as a metadata-only answer: %+v", m)
				}
				return
			}
			if err != nil || m.ResourceVersion != tc.wantRV || m.Annotations[ExpiresAtAnnotation] != part.Annotations[ExpiresAtAnnotation] {
				t.Fatalf("answer: %v; resourceVersion %q, annotations %v", err, m.ResourceVersion, m.Annotations)
			}
		})
	}
}

// answerTypes records the content type of every successful answer (a
// refusal's Status is the API server's to encode).
type answerTypes struct {
	rt    http.RoundTripper
	mu    sync.Mutex
	types []string
}

func (a *answerTypes) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.rt.RoundTrip(req)
	if err == nil && resp.StatusCode < 300 {
		a.mu.Lock()
		a.types = append(a.types, req.Method+" "+resp.Header.Get("Content-Type"))
		a.mu.Unlock()
	}
	return resp, err
}

// The writes of MetadataAnswers against the real API server: the answers
// are metadata only (answeredMetadata refuses anything else), and what was
// written is what a client reads back.
func TestMetadataAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the kube-apiserver of make tools")
	}
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	cp.Namespace("app")
	scheme := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(scheme)
	_ = corev1.AddToScheme(scheme)
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	answers := &answerTypes{rt: hc.Transport}
	hc.Transport = answers
	m, err := NewMetadataAnswers(cp.Config, hc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ttl := metav1.Duration{Duration: time.Minute}
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"},
		Spec: v1alpha1.VaultSecretSpec{Auth: v1alpha1.Auth{Kubernetes: &v1alpha1.KubernetesAuth{Role: "app", ServiceAccountName: "app"}},
			Source: v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}}, TTL: &ttl}}
	if err := c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	stale := vs.DeepCopy()

	// The Secret's create.
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	s := secretOf(desiredSecret(vs, map[string][]byte{"password": []byte("p")}, exp, "", ""))
	if err := m.CreateSecret(ctx, s, FieldManager); err != nil {
		t.Fatalf("create Secret: %v", err)
	}
	if s.ResourceVersion == "" || s.UID == "" || s.Annotations[ExpiresAtAnnotation] != formatTime(exp) {
		t.Fatalf("the create's answer lacks the Secret's metadata: %+v", s.ObjectMeta)
	}
	var got corev1.Secret
	if err := c.Get(ctx, client.ObjectKeyFromObject(s), &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Data["password"]) != "p" || !metav1.IsControlledBy(&got, vs) || got.ResourceVersion != s.ResourceVersion {
		t.Fatalf("the Secret read back is not the one created: data keys %d, controlled %v, resourceVersion %s (answered %s)",
			len(got.Data), metav1.IsControlledBy(&got, vs), got.ResourceVersion, s.ResourceVersion)
	}
	if !OwnsByUpdate(got.ManagedFields) {
		t.Fatalf("the create is not recorded as %s's: %+v", FieldManager, got.ManagedFields)
	}
	again := secretOf(desiredSecret(vs, map[string][]byte{"password": []byte("q")}, exp, "", ""))
	// A refusal says what refused, as the API server wrote it.
	if err := m.CreateSecret(ctx, again, FieldManager); !apierrors.IsAlreadyExists(err) || !strings.Contains(err.Error(), `secrets "db" already exists`) {
		t.Fatalf("a second create: %v, want the API server's AlreadyExists naming the Secret", err)
	}

	// An apply: new data and expiry; a label someone else set stays.
	got.Labels["team"] = "a"
	if err := c.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	later := exp.Add(time.Hour)
	body, err := json.Marshal(desiredSecret(vs, map[string][]byte{"password": []byte("q")}, later, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	applied := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name}}
	if err := m.ApplySecret(ctx, applied, body, FieldManager); err != nil {
		t.Fatalf("apply Secret: %v", err)
	}
	if applied.ResourceVersion == "" || applied.ResourceVersion == got.ResourceVersion || applied.Annotations[ExpiresAtAnnotation] != formatTime(later) {
		t.Fatalf("the apply's answer lacks the Secret's new metadata: %+v", applied.ObjectMeta)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(s), &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Data["password"]) != "q" || got.Labels["team"] != "a" || got.ResourceVersion != applied.ResourceVersion {
		t.Fatalf("the Secret read back after the apply: password changed %v, label kept %v, resourceVersion %s (answered %s)",
			string(got.Data["password"]) == "q", got.Labels["team"] == "a", got.ResourceVersion, applied.ResourceVersion)
	}

	// The status write.
	vs.Status.SecretName = s.Name
	vs.Status.ObservedGeneration = vs.Generation
	meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: ReasonSynced,
		Message: "synced", ObservedGeneration: vs.Generation})
	before := vs.ResourceVersion
	if err := m.UpdateStatus(ctx, vs); err != nil {
		t.Fatalf("status: %v", err)
	}
	if vs.ResourceVersion == before || vs.Status.SecretName != s.Name {
		t.Fatalf("after the status write: resourceVersion %s (was %s), secretName %q", vs.ResourceVersion, before, vs.Status.SecretName)
	}
	var read v1alpha1.VaultSecret
	if err := c.Get(ctx, client.ObjectKeyFromObject(vs), &read); err != nil {
		t.Fatal(err)
	}
	if read.ResourceVersion != vs.ResourceVersion || read.Status.SecretName != s.Name || !meta.IsStatusConditionTrue(read.Status.Conditions, "Ready") {
		t.Fatalf("status read back: resourceVersion %s (answered %s), %+v", read.ResourceVersion, vs.ResourceVersion, read.Status)
	}
	// Every successful answer so far, of a built-in and of a custom
	// resource, came as protobuf: the API server encoded no JSON for
	// them, and the controller decoded none.
	for _, a := range answers.types {
		if !strings.HasSuffix(a, "application/vnd.kubernetes.protobuf") {
			t.Errorf("an answer came as %q, not protobuf", a)
		}
	}
	if len(answers.types) != 3 {
		t.Errorf("%d answers recorded (%q), want the create, the apply and the status write", len(answers.types), answers.types)
	}
	stale.Status.SecretName = "stale"
	if err := m.UpdateStatus(ctx, stale); !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "the object has been modified") {
		t.Fatalf("a status write from a stale copy: %v, want the API server's conflict", err)
	}
	// An apply refused by validation names the field.
	bad := []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"app","labels":{"-bad-":"x"}}}`)
	if err := m.ApplySecret(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"}}, bad, FieldManager); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "metadata.labels") {
		t.Fatalf("an apply with an invalid label: %v, want the API server's Invalid naming metadata.labels", err)
	}
}

// The controller's side of a metadata-only answer, as JSON (what it asked
// for before) and as protobuf: a VaultSecret's status write answered with
// its metadata, managedFields and all, as the API server writes it.
func BenchmarkAnsweredMetadata(b *testing.B) {
	now := metav1.NewTime(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	fields := func(s string) *metav1.FieldsV1 { return &metav1.FieldsV1{Raw: []byte(s)} }
	part := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "vs-00001", UID: "7d1c9f3e-2b6a-4c1e-9a55-0c1d2e3f4a5b", ResourceVersion: "123456",
			Generation: 1, CreationTimestamp: now,
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "bench", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "secrets.vaultkms.io/v1alpha1", Time: &now, FieldsType: "FieldsV1",
					FieldsV1: fields(`{"f:spec":{".":{},"f:auth":{".":{},"f:kubernetes":{".":{},"f:role":{},"f:serviceAccountName":{}}},"f:source":{".":{},"f:kv":{".":{},"f:mount":{},"f:path":{}}},"f:ttl":{}}}`)},
				{Manager: "vaultkms-controller", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "secrets.vaultkms.io/v1alpha1", Time: &now, FieldsType: "FieldsV1",
					Subresource: "status",
					FieldsV1:    fields(`{"f:status":{".":{},"f:appliedGeneration":{},"f:conditions":{".":{},"k:{\"type\":\"Ready\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:observedGeneration":{},"f:reason":{},"f:status":{},"f:type":{}}},"f:dataHMAC":{},"f:expiresAt":{},"f:lastSyncTime":{},"f:metadataHash":{},"f:observedGeneration":{},"f:refreshAt":{},"f:secretName":{},"f:sourceHash":{}}}`)},
			}}}
	asJSON, err := json.Marshal(part)
	if err != nil {
		b.Fatal(err)
	}
	scheme, dec := metaCodec(b)
	var pb bytes.Buffer
	if err := pbserializer.NewSerializer(scheme, scheme).Encode(part, &pb); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{{"json", asJSON}, {"protobuf", pb.Bytes()}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.raw)))
			for b.Loop() {
				var m metav1.ObjectMeta
				if err := answeredMetadata(dec, tc.raw, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
