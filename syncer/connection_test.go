package syncer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// TestNamespaceAllowed: allowedNamespaces unset allows none, {} allows
// all, a selector allows what it matches.
func TestNamespaceAllowed(t *testing.T) {
	eu := map[string]string{"vault": "eu"}
	cases := []struct {
		name    string
		sel     *metav1.LabelSelector
		labels  map[string]string
		want    bool
		wantErr string
	}{
		{"unset allows none", nil, eu, false, ""},
		{"unset allows none, even unlabelled", nil, nil, false, ""},
		{"empty allows all", &metav1.LabelSelector{}, nil, true, ""},
		{"empty allows all, labelled", &metav1.LabelSelector{}, eu, true, ""},
		{"matchLabels matching", &metav1.LabelSelector{MatchLabels: eu}, map[string]string{"vault": "eu", "team": "a"}, true, ""},
		{"matchLabels other value", &metav1.LabelSelector{MatchLabels: eu}, map[string]string{"vault": "us"}, false, ""},
		{"matchLabels unlabelled", &metav1.LabelSelector{MatchLabels: eu}, nil, false, ""},
		{"matchExpressions In", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "vault", Operator: metav1.LabelSelectorOpIn, Values: []string{"eu", "eu2"}}}}, eu, true, ""},
		{"matchExpressions NotIn", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "vault", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"eu"}}}}, eu, false, ""},
		{"invalid operator", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "vault", Operator: "Near"}}}, eu, false, "spec.allowedNamespaces"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := namespaceAllowed(c.sel, c.labels)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || got {
					t.Fatalf("got %v, %v; want refused with an error naming %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

// TestCheckConnectionSpec: the flags' address rules, with errors naming
// the connection's field and the reason the status shows.
func TestCheckConnectionSpec(t *testing.T) {
	cases := []struct {
		name, conn, address string
		wantReason, wantMsg string
	}{
		{"https", "eu", "https://vault-eu.example:8200", "", ""},
		{"several for failover, spaces around commas", "eu", "https://a.example:8200, https://b.example:8200", "", ""},
		{"http to loopback", "eu", "http://127.0.0.1:8200", "", ""},
		{"http elsewhere", "eu", "http://vault-eu.example:8200", ReasonAddressInvalid, "spec.address \"http://vault-eu.example:8200\": plain http:// is allowed only to a loopback address"},
		{"one bad of several", "eu", "https://a.example:8200,http://b.example:8200", ReasonAddressInvalid, "spec.address \"http://b.example:8200\""},
		{"other scheme", "eu", "ftp://vault.example", ReasonAddressInvalid, "the scheme must be https"},
		{"a path", "eu", "https://vault.example:8200/v1", ReasonAddressInvalid, "give only scheme, host and port"},
		{"no host", "eu", "vault.example:8200", ReasonAddressInvalid, "spec.address"},
		{"empty", "eu", " ", ReasonAddressInvalid, "spec.address is empty"},
		{"the reserved name", "default", "https://vault.example:8200", ReasonNameReserved, "metadata.name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkConnectionSpec(c.conn, &v1alpha1.ClusterVaultConnectionSpec{Address: c.address})
			if c.wantReason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			fe, ok := err.(*fieldError)
			if !ok || fe.reason != c.wantReason || !strings.Contains(fe.msg, c.wantMsg) {
				t.Fatalf("got %v, want reason %s with %q", err, c.wantReason, c.wantMsg)
			}
			if strings.Contains(fe.msg, "--vault-addr") {
				t.Fatalf("message %q names the flag, not the connection's field", fe.msg)
			}
		})
	}
	sel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Near"}}}
	err := checkConnectionSpec("eu", &v1alpha1.ClusterVaultConnectionSpec{Address: "https://v.example", AllowedNamespaces: sel})
	if fe, ok := err.(*fieldError); !ok || fe.reason != ReasonAllowedNsInvalid {
		t.Fatalf("invalid selector: %v", err)
	}
}

func connScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func cvc(name, address string, allowed *metav1.LabelSelector) *v1alpha1.ClusterVaultConnection {
	return &v1alpha1.ClusterVaultConnection{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.ClusterVaultConnectionSpec{Address: address, AllowedNamespaces: allowed}}
}

func withReady(c *v1alpha1.ClusterVaultConnection, gen int64, status metav1.ConditionStatus, reason string, condGen int64) *v1alpha1.ClusterVaultConnection {
	c.Generation = gen
	c.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: status, Reason: reason, Message: "details", ObservedGeneration: condGen}}
	return c
}

func withConnection(va *v1alpha1.VaultAuth, name string) *v1alpha1.VaultAuth {
	va.Spec.ConnectionRef = &v1alpha1.ConnectionRef{Name: name}
	return va
}

// TestResolveConnection: which connection a VaultAuth gets, and the
// reason when it gets none. A namespace outside allowedNamespaces learns
// nothing of the connection's spec, not even that it is broken.
func TestResolveConnection(t *testing.T) {
	eu := &metav1.LabelSelector{MatchLabels: map[string]string{"vault": "eu"}}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{"vault": "eu"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}},
		cvc("eu", "https://vault-eu.example:8200", eu),
		cvc("closed", "https://vault-eu.example:8200", nil),
		cvc("broken", "http://vault-eu.example:8200", eu),
		withReady(cvc("no-ca", "https://vault-eu.example:8200", eu), 2, metav1.ConditionFalse, ReasonCACertInvalid, 2),
		withReady(cvc("fixed", "https://vault-eu.example:8200", eu), 3, metav1.ConditionFalse, ReasonCACertInvalid, 2),
	}
	r := &connectionResolver{Reader: fake.NewClientBuilder().WithScheme(connScheme(t)).WithObjects(objs...).Build()}
	inNS := func(ns string, va *v1alpha1.VaultAuth) *v1alpha1.VaultAuth { va.Namespace = ns; return va }
	cases := []struct {
		name       string
		va         *v1alpha1.VaultAuth
		wantConn   string
		wantReason string
		wantMsg    string
	}{
		{"no connectionRef: the default", k8sAuth("app"), DefaultConnection, "", ""},
		{"named default: the default", withConnection(k8sAuth("app"), "default"), DefaultConnection, "", ""},
		{"allowed", withConnection(k8sAuth("app"), "eu"), "eu", "", ""},
		{"namespace not selected", inNS("other", withConnection(k8sAuth("app"), "eu")), "", ReasonConnectionNotAllowed, `does not allow namespace other`},
		{"allowedNamespaces unset", withConnection(k8sAuth("app"), "closed"), "", ReasonConnectionNotAllowed, "spec.allowedNamespaces"},
		{"missing", withConnection(k8sAuth("app"), "nowhere"), "", ReasonConnectionNotFound, `spec.connectionRef.name: no ClusterVaultConnection "nowhere"`},
		{"allowed, invalid address", withConnection(k8sAuth("app"), "broken"), "", ReasonConnectionInvalid, `ClusterVaultConnection "broken" cannot be used (AddressInvalid)`},
		{"allowed, its status says the CA is invalid", withConnection(k8sAuth("app"), "no-ca"), "", ReasonConnectionInvalid, "(CACertInvalid)"},
		{"allowed, status of an older generation", withConnection(k8sAuth("app"), "fixed"), "fixed", "", ""},
		{"not allowed, invalid address", inNS("other", withConnection(k8sAuth("app"), "broken")), "", ReasonConnectionNotAllowed, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := r.resolve(context.Background(), c.va)
			if c.wantReason == "" {
				if err != nil || conn.Name != c.wantConn {
					t.Fatalf("got %+v, %v; want connection %s", conn, err, c.wantConn)
				}
				if (conn.Key == "") != (c.wantConn == DefaultConnection) {
					t.Fatalf("key %q: only the default connection has an empty key", conn.Key)
				}
				return
			}
			if conn != nil || invalidReason(err) != c.wantReason || !strings.Contains(err.Error(), c.wantMsg) {
				t.Fatalf("got %+v, %v (reason %s); want %s with %q", conn, err, invalidReason(err), c.wantReason, c.wantMsg)
			}
			if strings.Contains(err.Error(), "vault-eu.example") {
				t.Fatalf("message %q shows the connection's address to a tenant", err)
			}
		})
	}
}

// TestConnectionKeys: a token of one Vault is never used with another.
func TestConnectionKeys(t *testing.T) {
	a := &v1alpha1.ClusterVaultConnectionSpec{Address: "https://a.example:8200,https://b.example:8200"}
	spaced := &v1alpha1.ClusterVaultConnectionSpec{Address: "https://a.example:8200 , https://b.example:8200"}
	moved := &v1alpha1.ClusterVaultConnectionSpec{Address: "https://c.example:8200"}
	otherNS := &v1alpha1.ClusterVaultConnectionSpec{Address: a.Address, Namespace: "team-a"}
	if connectionKey("eu", a) != connectionKey("eu", spaced) {
		t.Fatal("spaces around commas changed the key: every token would be dropped for nothing")
	}
	for name, other := range map[string]string{
		"another address":         connectionKey("eu", moved),
		"another Vault namespace": connectionKey("eu", otherNS),
		"another connection":      connectionKey("us", a),
	} {
		if other == connectionKey("eu", a) {
			t.Errorf("%s: same key", name)
		}
	}
	va := withConnection(k8sAuth("app"), "eu")
	def := vaultAuthKeyAt(k8sAuth("app"), &connection{Name: DefaultConnection})
	if def != vaultAuthKey(k8sAuth("app")) {
		t.Fatal("the default connection's key moved: an upgrade would log every VaultAuth in again")
	}
	k1 := vaultAuthKeyAt(va, &connection{Name: "eu", Key: connectionKey("eu", a)})
	k2 := vaultAuthKeyAt(va, &connection{Name: "eu", Key: connectionKey("eu", moved)})
	if k1 == k2 || k1 == def {
		t.Fatalf("token keys of two Vaults are equal: %v %v %v", k1, k2, def)
	}
}

// connTestCA returns a PEM CA certificate.
func connTestCA(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestConnectionPool: one client per connection, kept while nothing
// changes, rebuilt when the spec or the CA Secret's content changes; the
// CA file follows the Secret; a CA that cannot be loaded names the field.
func TestConnectionPool(t *testing.T) {
	ctx := context.Background()
	caSecret := func(data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "vaultkms-system", Name: "vault-eu-ca"}, Data: data}
	}
	first := connTestCA(t, "first")
	c := fake.NewClientBuilder().WithScheme(connScheme(t)).WithObjects(caSecret(map[string][]byte{"ca.crt": first})).Build()
	p := &connectionPool{APIReader: c}
	t.Cleanup(p.close)
	spec := &v1alpha1.ClusterVaultConnectionSpec{Address: "https://vault-eu.example:8200", Namespace: "team-a",
		CACert: &v1alpha1.CACertSource{SecretRef: v1alpha1.SecretKeyRef{Namespace: "vaultkms-system", Name: "vault-eu-ca"}}}
	conn := &connection{Name: "eu", Key: connectionKey("eu", spec), Spec: spec}
	c1, err := p.client(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Namespace() != "team-a" {
		t.Fatalf("Vault namespace %q, want team-a", c1.Namespace())
	}
	if c2, _ := p.client(ctx, conn); c2 != c1 {
		t.Fatal("an unchanged connection got a new client (a new transport per login)")
	}
	caFile := p.dir + "/eu.pem"
	if b, _ := os.ReadFile(caFile); string(b) != string(first) {
		t.Fatal("the CA file does not hold the Secret's CA")
	}
	if fi, err := os.Stat(p.dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("CA directory %v, %v: want private (0700)", fi, err)
	}

	second := connTestCA(t, "second")
	if err := c.Update(ctx, caSecret(map[string][]byte{"ca.crt": second})); err != nil {
		t.Fatal(err)
	}
	c3, err := p.client(ctx, conn)
	if err != nil || c3 == c1 {
		t.Fatalf("a new CA kept the old client (err %v)", err)
	}
	if b, _ := os.ReadFile(caFile); string(b) != string(second) {
		t.Fatal("the CA file still holds the old CA: clients of cached tokens never see the new one")
	}

	moved := *spec
	moved.Address = "https://vault-eu2.example:8200"
	if c4, err := p.client(ctx, &connection{Name: "eu", Key: connectionKey("eu", &moved), Spec: &moved}); err != nil || c4 == c3 {
		t.Fatalf("a new address kept the old client (err %v)", err)
	}

	for name, tc := range map[string]struct {
		secret *corev1.Secret
		key    string
		want   string
	}{
		"no Secret":  {nil, "", "spec.caCert.secretRef: Secret vaultkms-system/vault-eu-ca not found"},
		"no key":     {caSecret(map[string][]byte{"other": first}), "", `spec.caCert.secretRef.key: Secret vaultkms-system/vault-eu-ca has no key "ca.crt"`},
		"named key":  {caSecret(map[string][]byte{"ca.pem": []byte("not a certificate")}), "ca.pem", `key "ca.pem" of Secret vaultkms-system/vault-eu-ca holds no PEM certificate`},
		"not a cert": {caSecret(map[string][]byte{"ca.crt": []byte("-----BEGIN NOTHING-----")}), "", "holds no PEM certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(connScheme(t))
			if tc.secret != nil {
				b = b.WithObjects(tc.secret)
			}
			p := &connectionPool{APIReader: b.Build()}
			t.Cleanup(p.close)
			s := *spec
			s.CACert = &v1alpha1.CACertSource{SecretRef: v1alpha1.SecretKeyRef{Namespace: "vaultkms-system", Name: "vault-eu-ca", Key: tc.key}}
			_, err := p.client(ctx, &connection{Name: "eu", Key: connectionKey("eu", &s), Spec: &s})
			var fe *fieldError
			if err == nil || !asFieldError(err, &fe) || fe.reason != ReasonCACertInvalid || !strings.Contains(fe.msg, tc.want) {
				t.Fatalf("got %v, want %s with %q", err, ReasonCACertInvalid, tc.want)
			}
			if invalidReason(err) != ReasonConnectionInvalid {
				t.Fatalf("reason for a VaultAuth %s, want %s", invalidReason(err), ReasonConnectionInvalid)
			}
		})
	}
}

func asFieldError(err error, fe **fieldError) bool { return errors.As(err, fe) }
