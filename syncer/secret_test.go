package syncer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func TestRenderData(t *testing.T) {
	vs := &v1alpha1.VaultSecret{Spec: v1alpha1.VaultSecretSpec{Target: v1alpha1.Target{Template: map[string]string{
		"application.properties": "db.user={{ .username }}\ndb.password={{ .password }}\n",
	}}}}
	out, err := shape(vs, map[string][]byte{"username": []byte("u1"), "password": []byte("p1")}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	if string(out["application.properties"]) != "db.user=u1\ndb.password=p1\n" || string(out["username"]) != "u1" {
		t.Fatalf("rendered %q", out["application.properties"])
	}
	vs.Spec.Target.Template = map[string]string{"x": "{{ .missing }}"}
	_, err = shape(vs, map[string][]byte{"password": []byte("hunter2")}, clock.RealClock{})
	if err == nil || !strings.Contains(err.Error(), `spec.target.template["x"]`) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("missing key error %v: must name the field and hide the data", err)
	}
	vs.Spec.Target.Template = map[string]string{"x": "{{ .broken"}
	if _, err := shape(vs, nil, clock.RealClock{}); err == nil || !strings.Contains(err.Error(), `spec.target.template["x"]`) {
		t.Fatalf("parse error %v", err)
	}
}

func TestDesiredSecret(t *testing.T) {
	vs := &v1alpha1.VaultSecret{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app", UID: "uid-1"},
		Spec: v1alpha1.VaultSecretSpec{Source: v1alpha1.Source{PKI: &v1alpha1.PKISource{}},
			Target: v1alpha1.Target{Labels: map[string]string{"team": "a", ManagedByLabel: "someone-else"}, Annotations: map[string]string{"note": "x"}}},
	}
	exp := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := desiredSecret(vs, map[string][]byte{"tls.crt": nil}, exp, "database/creds/app/x1", "")
	if *s.Name != "web" || *s.Type != corev1.SecretTypeTLS || s.Labels[ManagedByLabel] != ManagedByValue || s.Labels["team"] != "a" {
		t.Fatalf("secret %+v", s.ObjectMetaApplyConfiguration)
	}
	if s.Annotations[ExpiresAtAnnotation] != "2026-11-25T12:00:00Z" || s.Annotations["note"] != "x" || s.Annotations[LeaseAnnotation] != "database/creds/app/x1" {
		t.Fatalf("annotations %v", s.Annotations)
	}
	if len(s.OwnerReferences) != 1 || *s.OwnerReferences[0].UID != vs.UID || !*s.OwnerReferences[0].Controller {
		t.Fatalf("owner %+v", s.OwnerReferences)
	}
	if _, ok := desiredSecret(vs, nil, exp, "", "").Annotations[LeaseAnnotation]; ok {
		t.Fatal("a Secret without lease names one")
	}
}

func TestDataHMAC(t *testing.T) {
	a := dataHMAC([]byte("k"), map[string][]byte{"a": []byte("1"), "b": []byte("2")})
	if a != dataHMAC([]byte("k"), map[string][]byte{"b": []byte("2"), "a": []byte("1")}) {
		t.Fatal("HMAC depends on map order")
	}
	// Moving bytes between keys or values must change it.
	if a == dataHMAC([]byte("k"), map[string][]byte{"a": []byte("12"), "b": []byte("")}) ||
		a == dataHMAC([]byte("other key"), map[string][]byte{"a": []byte("1"), "b": []byte("2")}) {
		t.Fatal("HMAC collision")
	}
	if !strings.HasPrefix(a, "hmac-sha256:"+hmacKeyID([]byte("k"))+":") || len(a) != len("hmac-sha256:")+len(hmacKeyID([]byte("k")))+1+43 {
		t.Fatalf("HMAC %q is not a full HMAC-SHA256", a)
	}
}

func TestJitterIsStableAndSpread(t *testing.T) {
	if jitterFor("a") != jitterFor("a") {
		t.Fatal("jitter must be stable across restarts")
	}
	seen := map[int]bool{}
	for i := range 100 {
		j := jitterFor(string(rune('a' + i)))
		if j < 0 || j >= 1 {
			t.Fatalf("jitter %f outside [0,1)", j)
		}
		seen[int(j*10)] = true
	}
	if len(seen) < 7 {
		t.Fatalf("jitter of 100 UIDs falls in only %d of 10 deciles", len(seen))
	}
}

func TestShapeRefusesInvalidVaultKeys(t *testing.T) {
	vs := &v1alpha1.VaultSecret{}
	_, err := shape(vs, map[string][]byte{"bad key/with slash": []byte("s3cr3t")}, clock.RealClock{})
	if err == nil || !strings.Contains(err.Error(), "not a valid Secret key") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
}

func TestLeafAndChain(t *testing.T) {
	root, rootKey := testCA(t, "root", nil, nil)
	inter, interKey := testCA(t, "intermediate", root, rootKey)
	leaf, _ := testCA(t, "leaf", inter, interKey)
	pemOf := func(c *x509.Certificate) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	got, err := leafAndChain(pemOf(leaf), pemOf(inter), []any{pemOf(inter), pemOf(root)})
	if err != nil {
		t.Fatal(err)
	}
	if want := pemOf(leaf) + pemOf(inter); got != want {
		t.Fatalf("tls.crt holds %d bytes, want leaf then intermediate (%d bytes), no root", len(got), len(want))
	}
	// Issued directly by the root: the leaf alone.
	got, err = leafAndChain(pemOf(inter), pemOf(root), nil)
	if err != nil || got != pemOf(inter) {
		t.Fatalf("leaf issued by the root: %q, %v", got, err)
	}
}

func testCA(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}
