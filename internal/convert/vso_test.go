package convert

import (
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// vsoFull is written the way the Vault Secrets Operator's documentation
// shows its objects: a connection, two logins and one secret of each kind.
const vsoFull = `
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultConnection
metadata: {name: vault, namespace: shop}
spec:
  address: https://vault.internal.example:8200
  caCertSecretRef: vault-ca
  skipTLSVerify: false
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata: {name: shop-k8s, namespace: shop}
spec:
  vaultConnectionRef: vault
  method: kubernetes
  mount: kubernetes-prod
  kubernetes:
    role: shop
    serviceAccount: shop-api
    audiences: [vault]
    tokenExpirationSeconds: 600
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata: {name: shop-approle, namespace: shop}
spec:
  vaultConnectionRef: vault
  method: appRole
  mount: approle
  appRole:
    roleId: 6a1f-not-printed-77c2
    secretRef: shop-approle-secret
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultStaticSecret
metadata: {name: shop-config, namespace: shop}
spec:
  vaultAuthRef: shop-k8s
  type: kv-v2
  mount: kvv2
  path: shop/config
  version: 3
  refreshAfter: 60s
  hmacSecretData: true
  destination:
    name: shop-config
    create: true
    labels: {app: shop}
    annotations: {owner: team-shop}
    type: Opaque
    transformation:
      excludes: [".*_internal"]
      templates:
        dsn:
          text: '{{ .Secrets.user }}@{{ get .Secrets "host" }}'
  rolloutRestartTargets:
  - {kind: Deployment, name: shop-api}
  - {kind: argo.Rollout, name: shop-web}
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultDynamicSecret
metadata: {name: shop-db, namespace: shop}
spec:
  vaultAuthRef: shop-approle
  mount: database
  path: creds/shop
  renewalPercent: 67
  revoke: true
  destination: {name: shop-db, create: true}
  rolloutRestartTargets:
  - {kind: StatefulSet, name: shop-worker}
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultPKISecret
metadata: {name: shop-tls, namespace: shop}
spec:
  vaultAuthRef: shop-k8s
  mount: pki
  role: shop-dot-example
  commonName: shop.example.com
  altNames: [www.shop.example.com]
  ipSans: [10.0.0.7]
  ttl: 24h
  expiryOffset: 1h
  format: pem
  destination: {name: shop-tls, create: true, type: kubernetes.io/tls}
`

func TestVSOFull(t *testing.T) {
	c := run(t, vsoFull, Options{})
	if c.count != 6 || len(c.conns) != 1 || len(c.auths) != 2 || len(c.secrets) != 3 {
		t.Fatalf("converted %d: %d connections, %d auths, %d secrets\n%s\n%s", c.count, len(c.conns), len(c.auths), len(c.secrets), c.yaml, c.warnings)
	}
	conn := c.conns["shop-vault"]
	if conn.Spec.Address != "https://vault.internal.example:8200" ||
		conn.Spec.CACert == nil || conn.Spec.CACert.SecretRef != (v1alpha1.SecretKeyRef{Namespace: "shop", Name: "vault-ca", Key: "ca.crt"}) {
		t.Errorf("connection %+v", conn.Spec)
	}
	if sel := conn.Spec.AllowedNamespaces; sel == nil || len(sel.MatchExpressions) != 1 ||
		sel.MatchExpressions[0].Key != "kubernetes.io/metadata.name" || strings.Join(sel.MatchExpressions[0].Values, ",") != "shop" {
		t.Errorf("allowedNamespaces %+v, want kubernetes.io/metadata.name In [shop]", conn.Spec.AllowedNamespaces)
	}

	k8s := c.auths["shop/shop-k8s"].Spec
	if k8s.Kubernetes == nil || k8s.Kubernetes.Role != "shop" || k8s.Kubernetes.ServiceAccountName != "shop-api" || k8s.Kubernetes.Mount != "kubernetes-prod" ||
		strings.Join(k8s.Kubernetes.Audiences, ",") != "vault" || k8s.ConnectionRef == nil || k8s.ConnectionRef.Name != "shop-vault" {
		t.Errorf("kubernetes VaultAuth %+v", k8s)
	}
	ar := c.auths["shop/shop-approle"].Spec.AppRole
	if ar == nil || *ar != (v1alpha1.AppRoleAuth{SecretRef: "shop-approle-secret", SecretIDKey: "id", RoleIDKey: "role-id", Mount: "approle"}) {
		t.Errorf("appRole VaultAuth %+v", ar)
	}

	st := c.secrets["shop/shop-config"].Spec
	if st.AuthRef.Name != "shop-k8s" || st.Source.KV == nil || *st.Source.KV != (v1alpha1.KVSource{Mount: "kvv2", Path: "shop/config", Version: 3, KVVersion: 2}) {
		t.Errorf("static source %+v", st)
	}
	if st.RefreshInterval.Duration != time.Minute || st.TTL.Duration != 3*time.Minute {
		t.Errorf("refreshAfter 60s gave refreshInterval %v ttl %v, want 1m and 3m", st.RefreshInterval, st.TTL)
	}
	if st.Target.Name != "shop-config" || st.Target.Labels["app"] != "shop" || st.Target.Annotations["owner"] != "team-shop" || st.Target.Type != "Opaque" {
		t.Errorf("target %+v", st.Target)
	}
	if got := st.Target.Template["dsn"]; got != `{{ .user }}@{{ index . "host" }}` {
		t.Errorf("template rewritten to %q", got)
	}
	if len(st.RolloutRestartTargets) != 1 || st.RolloutRestartTargets[0] != (v1alpha1.RolloutRestartTarget{Kind: "Deployment", Name: "shop-api"}) {
		t.Errorf("rollout targets %+v (the Argo Rollout must be left out)", st.RolloutRestartTargets)
	}

	dyn := c.secrets["shop/shop-db"].Spec
	if dyn.Source.Dynamic == nil || *dyn.Source.Dynamic != (v1alpha1.DynamicSource{Mount: "database", Path: "creds/shop"}) ||
		dyn.RevokeOnDelete == nil || !*dyn.RevokeOnDelete || dyn.AuthRef.Name != "shop-approle" || dyn.RefreshInterval != nil {
		t.Errorf("dynamic %+v", dyn)
	}
	pki := c.secrets["shop/shop-tls"].Spec
	if pki.Source.PKI == nil || pki.Source.PKI.CommonName != "shop.example.com" || pki.Source.PKI.Role != "shop-dot-example" ||
		strings.Join(pki.Source.PKI.AltNames, ",") != "www.shop.example.com" || strings.Join(pki.Source.PKI.IPSans, ",") != "10.0.0.7" ||
		pki.TTL.Duration != 24*time.Hour || pki.Target.Type != "kubernetes.io/tls" {
		t.Errorf("pki %+v", pki)
	}

	for _, want := range []string{
		"VaultStaticSecret/shop/shop-config: spec.rolloutRestartTargets[1].kind: argo.Rollout \"shop-web\": vaultkms restarts only",
		"VaultStaticSecret/shop/shop-config: spec.destination.transformation.excludes: no equivalent",
		"VaultAuth/shop/shop-approle: spec.appRole.roleId: vaultkms reads the role ID from the Secret too",
		"VaultAuth/shop/shop-k8s: spec.kubernetes.tokenExpirationSeconds: no equivalent",
		"VaultDynamicSecret/shop/shop-db: spec.renewalPercent: no equivalent",
		"VaultPKISecret/shop/shop-tls: spec.expiryOffset: no equivalent",
		"VaultPKISecret/shop/shop-tls: spec.destination: the Secret holds keys tls.crt, tls.key and ca.crt",
	} {
		if !strings.Contains(c.warnings, want) {
			t.Errorf("warnings:\n%s\nwant a line containing %q", c.warnings, want)
		}
	}
	if strings.Contains(c.warnings+c.yaml, "6a1f-not-printed-77c2") {
		t.Errorf("the appRole roleId was printed")
	}
	if strings.Contains(c.warnings, "unknown field") {
		t.Errorf("documented fields reported as unknown:\n%s", c.warnings)
	}
}

func TestVSOCases(t *testing.T) {
	cases := []struct {
		name  string
		input string
		check func(t *testing.T, c converted)
		warn  []string
	}{
		{
			name: "jwt with a service account; no vaultAuthRef means the operator's default",
			input: `
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata: {name: default, namespace: ci}
spec:
  method: jwt
  mount: jwt-k8s
  jwt: {role: ci, serviceAccount: runner}
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultStaticSecret
metadata: {name: s, namespace: ci}
spec:
  type: kv-v1
  mount: kv
  path: ci/token
  destination: {name: ci-token}
`,
			check: func(t *testing.T, c converted) {
				j := c.auths["ci/default"].Spec.JWT
				if j == nil || j.Role != "ci" || j.ServiceAccountName != "runner" || j.Mount != "jwt-k8s" || c.auths["ci/default"].Spec.ConnectionRef != nil {
					t.Errorf("jwt VaultAuth %+v", c.auths["ci/default"].Spec)
				}
				s := c.secrets["ci/s"].Spec
				if s.AuthRef.Name != "default" || s.Source.KV.KVVersion != 1 || s.RefreshInterval != nil || s.TTL != nil {
					t.Errorf("secret %+v", s)
				}
			},
			warn: []string{
				"VaultStaticSecret/ci/s: spec.vaultAuthRef: unset",
				"VaultStaticSecret/ci/s: spec.destination.create: false",
				"VaultAuth/ci/default: spec.jwt.audiences: unset",
			},
		},
		{
			name: "a Vault namespace makes a connection of its own",
			input: `
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultConnection
metadata: {name: ent, namespace: team}
spec: {address: "https://vault.example:8200", skipTLSVerify: true, headers: {X-A: b}}
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata: {name: a, namespace: team}
spec:
  vaultConnectionRef: ent
  namespace: team-a/sub
  method: kubernetes
  mount: kubernetes
  kubernetes: {role: r, serviceAccount: sa, audiences: [vault]}
`,
			check: func(t *testing.T, c converted) {
				conn, ok := c.conns["team-ent-team-a-sub"]
				if !ok || conn.Spec.Namespace != "team-a/sub" || c.auths["team/a"].Spec.ConnectionRef.Name != "team-ent-team-a-sub" {
					t.Errorf("connections %v, auth %+v", c.conns, c.auths["team/a"].Spec)
				}
			},
			warn: []string{"VaultConnection/team/ent: spec.skipTLSVerify: no equivalent", "VaultConnection/team/ent: spec.headers: no equivalent"},
		},
		{
			name: "a plain http address and a missing connection",
			input: `
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultConnection
metadata: {name: plain, namespace: x}
spec: {address: "http://vault.vault.svc:8200"}
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata: {name: a, namespace: x}
spec: {vaultConnectionRef: elsewhere, method: appRole, mount: approle, appRole: {roleId: r, secretRef: s}}
`,
			check: func(t *testing.T, c converted) {
				if c.auths["x/a"].Spec.ConnectionRef.Name != "x-elsewhere" {
					t.Errorf("auth %+v", c.auths["x/a"].Spec)
				}
			},
			warn: []string{"VaultConnection/x/plain: spec.address: http://vault.vault.svc:8200 is plain http", "VaultAuth/x/a: spec.vaultConnectionRef: VaultConnection x/elsewhere is not in the input"},
		},
		{
			name: "templates over data vaultkms does not give are left out",
			input: `
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultStaticSecret
metadata: {name: s, namespace: x}
spec:
  vaultAuthRef: a
  type: kv-v2
  mount: kv
  path: p
  refreshAfter: 2s
  destination:
    name: s
    create: true
    transformation:
      templates:
        all: {text: '{{ range $k, $v := .Secrets }}{{ $k }}{{ end }}'}
`,
			check: func(t *testing.T, c converted) {
				s := c.secrets["x/s"].Spec
				if len(s.Target.Template) != 0 || s.RefreshInterval.Duration != 5*time.Second || s.TTL.Duration != 15*time.Second {
					t.Errorf("secret %+v", s)
				}
			},
			warn: []string{"templates.all.text: uses data vaultkms does not give", "spec.refreshAfter: 2s is below vaultkms' minimum refreshInterval"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := run(t, tc.input, Options{})
			tc.check(t, c)
			for _, w := range tc.warn {
				if !strings.Contains(c.warnings, w) {
					t.Errorf("warnings:\n%s\nwant a line containing %q", c.warnings, w)
				}
			}
		})
	}
}
