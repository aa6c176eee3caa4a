package convert

import (
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// The inputs are written the way the External Secrets Operator's
// documentation shows a vault store and its ExternalSecrets, in both
// served versions.

const esoSingle = `
apiVersion: external-secrets.io/%s
kind: SecretStore
metadata: {name: vault-backend, namespace: web}
spec:
  provider:
    vault:
      server: https://vault.internal.example:8200
      path: secret
      version: v2
      caProvider: {type: Secret, name: vault-ca, key: ca.pem}
      auth:
        kubernetes:
          mountPath: kubernetes
          role: web
          serviceAccountRef: {name: web, audiences: [vault]}
---
apiVersion: external-secrets.io/%s
kind: ExternalSecret
metadata: {name: web-db, namespace: web}
spec:
  refreshInterval: 15s
  secretStoreRef: {name: vault-backend, kind: SecretStore}
  target: {name: web-db-secret, creationPolicy: Owner}
  data:
  - secretKey: DB_PASSWORD
    remoteRef: {key: web/db, property: password}
  - secretKey: username
    remoteRef: {key: web/db, property: username}
`

func TestESOSinglePath(t *testing.T) {
	for _, version := range []string{"v1", "v1beta1"} {
		t.Run(version, func(t *testing.T) {
			c := run(t, strings.ReplaceAll(esoSingle, "%s", version), Options{})
			if c.count != 2 || len(c.conns) != 1 || len(c.auths) != 1 || len(c.secrets) != 1 {
				t.Fatalf("converted %d\n%s\n%s", c.count, c.yaml, c.warnings)
			}
			conn := c.conns["web-vault-backend"]
			if conn.Spec.CACert == nil || conn.Spec.CACert.SecretRef != (v1alpha1.SecretKeyRef{Namespace: "web", Name: "vault-ca", Key: "ca.pem"}) ||
				strings.Join(conn.Spec.AllowedNamespaces.MatchExpressions[0].Values, ",") != "web" {
				t.Errorf("connection %+v", conn.Spec)
			}
			a := c.auths["web/vault-backend"].Spec
			if a.Kubernetes == nil || a.Kubernetes.Role != "web" || a.Kubernetes.ServiceAccountName != "web" || a.Kubernetes.Mount != "kubernetes" ||
				a.ConnectionRef == nil || a.ConnectionRef.Name != "web-vault-backend" {
				t.Errorf("VaultAuth %+v", a)
			}
			s := c.secrets["web/web-db"].Spec
			if s.Source.KV == nil || *s.Source.KV != (v1alpha1.KVSource{Mount: "secret", Path: "web/db", KVVersion: 2}) || len(s.Sources) != 0 {
				t.Errorf("source %+v / %+v", s.Source, s.Sources)
			}
			if s.AuthRef.Name != "vault-backend" || s.Target.Name != "web-db-secret" || s.Target.Adopt {
				t.Errorf("spec %+v", s)
			}
			if len(s.Target.Template) != 1 || s.Target.Template["DB_PASSWORD"] != `{{ index . "password" }}` {
				t.Errorf("template %v: want only DB_PASSWORD renamed from password (username keeps its name)", s.Target.Template)
			}
			if s.RefreshInterval.Duration != 15*time.Second || s.TTL.Duration != 45*time.Second {
				t.Errorf("refreshInterval %v ttl %v, want 15s and 45s", s.RefreshInterval, s.TTL)
			}
			want := "ExternalSecret/web/web-db: spec.data: the Secret also holds every other key of secret/web/db"
			if !strings.Contains(c.warnings, want) {
				t.Errorf("warnings:\n%s\nwant %q", c.warnings, want)
			}
			if strings.Contains(c.warnings, "unknown field") {
				t.Errorf("documented fields reported as unknown:\n%s", c.warnings)
			}
		})
	}
}

const esoCluster = `
apiVersion: external-secrets.io/v1beta1
kind: ClusterSecretStore
metadata: {name: vault-global}
spec:
  conditions:
  - namespaces: [batch]
  provider:
    vault:
      server: https://vault.internal.example:8200
      path: kv
      version: v1
      namespace: platform
      auth:
        jwt:
          path: jwt-cluster
          role: eso
          kubernetesServiceAccountToken:
            serviceAccountRef: {name: reader}
            audiences: [vault]
            expirationSeconds: 600
---
apiVersion: external-secrets.io/v1beta1
kind: ExternalSecret
metadata: {name: merged, namespace: api}
spec:
  secretStoreRef: {name: vault-global, kind: ClusterSecretStore}
  data:
  - secretKey: token
    remoteRef: {key: api/one, property: token}
  - secretKey: cert
    remoteRef: {key: api/two, property: cert}
  dataFrom:
  - extract: {key: api/three}
---
apiVersion: external-secrets.io/v1beta1
kind: ExternalSecret
metadata: {name: single, namespace: jobs}
spec:
  refreshInterval: 0s
  secretStoreRef: {name: vault-global, kind: ClusterSecretStore}
  dataFrom:
  - extract: {key: jobs/all}
`

func TestESOClusterStoreAndSources(t *testing.T) {
	c := run(t, esoCluster, Options{})
	if c.count != 3 || len(c.conns) != 1 || len(c.auths) != 2 || len(c.secrets) != 2 {
		t.Fatalf("converted %d\n%s\n%s", c.count, c.yaml, c.warnings)
	}
	conn := c.conns["vault-global"]
	if conn.Spec.Namespace != "platform" || strings.Join(conn.Spec.AllowedNamespaces.MatchExpressions[0].Values, ",") != "api,batch,jobs" {
		t.Errorf("connection %+v", conn.Spec)
	}
	for _, ns := range []string{"api", "jobs"} {
		j := c.auths[ns+"/vault-global"].Spec.JWT
		if j == nil || j.Role != "eso" || j.ServiceAccountName != "reader" || j.Mount != "jwt-cluster" || strings.Join(j.Audiences, ",") != "vault" {
			t.Errorf("VaultAuth in %s: %+v", ns, c.auths[ns+"/vault-global"].Spec)
		}
	}
	m := c.secrets["api/merged"].Spec
	if m.Source.KV != nil || len(m.Sources) != 3 {
		t.Fatalf("merged: source %+v, %d sources", m.Source, len(m.Sources))
	}
	for i, p := range []string{"api/one", "api/two", "api/three"} {
		if kv := m.Sources[i].KV; kv == nil || *kv != (v1alpha1.KVSource{Mount: "kv", Path: p, KVVersion: 1}) {
			t.Errorf("sources[%d] = %+v, want kv %s (v1)", i, m.Sources[i].KV, p)
		}
	}
	if len(m.Target.Template) != 0 || m.Target.Name != "merged" || m.RefreshInterval.Duration != time.Hour || m.TTL.Duration != 3*time.Hour {
		t.Errorf("merged %+v: no renames, target defaults to the ExternalSecret's name, the peer's default 1h refresh", m)
	}
	s := c.secrets["jobs/single"].Spec
	if s.Source.KV == nil || s.Source.KV.Path != "jobs/all" || s.RefreshInterval.Duration != time.Hour {
		t.Errorf("single %+v", s)
	}
	for _, w := range []string{
		"ExternalSecret/api/merged: spec.data: 3 paths: written as spec.sources",
		"ExternalSecret/jobs/single: spec.refreshInterval: 0 (never refresh): no equivalent",
		"ClusterSecretStore/vault-global: spec.provider.vault.auth.jwt.kubernetesServiceAccountToken.expirationSeconds: no equivalent",
	} {
		if !strings.Contains(c.warnings, w) {
			t.Errorf("warnings:\n%s\nwant %q", c.warnings, w)
		}
	}
}

func TestESOCases(t *testing.T) {
	cases := []struct {
		name  string
		input string
		check func(t *testing.T, c converted)
		warn  []string
	}{
		{
			name: "appRole with the role ID in the same Secret; a mount taken from the key",
			input: `
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {name: ar, namespace: ns1}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      auth:
        appRole:
          path: approle
          roleRef: {name: approle-creds, key: role}
          secretRef: {name: approle-creds, key: secret}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: e, namespace: ns1}
spec:
  secretStoreRef: {name: ar}
  target: {name: out}
  data:
  - secretKey: api-key
    remoteRef: {key: team-kv/svc/api, property: api-key, version: "4"}
`,
			check: func(t *testing.T, c converted) {
				ar := c.auths["ns1/ar"].Spec.AppRole
				if ar == nil || *ar != (v1alpha1.AppRoleAuth{SecretRef: "approle-creds", SecretIDKey: "secret", RoleIDKey: "role", Mount: "approle"}) {
					t.Errorf("appRole %+v", ar)
				}
				kv := c.secrets["ns1/e"].Spec.Source.KV
				if kv == nil || *kv != (v1alpha1.KVSource{Mount: "team-kv", Path: "svc/api", Version: 4, KVVersion: 2}) {
					t.Errorf("kv %+v", kv)
				}
			},
		},
		{
			name: "what has no equivalent is named, the rest converted",
			input: `
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {name: st, namespace: ns1}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      path: secret
      auth:
        kubernetes: {role: r, serviceAccountRef: {name: sa}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: e, namespace: ns1}
spec:
  secretStoreRef: {name: st}
  target:
    creationPolicy: Merge
    template:
      type: kubernetes.io/basic-auth
      metadata: {labels: {l: v}}
      data: {password: "{{ .pw }}"}
  data:
  - secretKey: whole
    remoteRef: {key: app/blob}
  - secretKey: pw
    remoteRef: {key: secret/app/creds, property: password}
  - secretKey: gen
    sourceRef: {generatorRef: {apiVersion: generators.external-secrets.io/v1alpha1, kind: Password, name: p}}
  dataFrom:
  - find: {name: {regexp: "^app-"}}
`,
			check: func(t *testing.T, c converted) {
				s := c.secrets["ns1/e"].Spec
				if s.Source.KV == nil || s.Source.KV.Path != "app/creds" || s.Target.Type != "kubernetes.io/basic-auth" || s.Target.Labels["l"] != "v" ||
					s.Target.Template["password"] != "{{ .pw }}" || s.Target.Template["pw"] != `{{ index . "password" }}` {
					t.Errorf("spec %+v", s)
				}
			},
			warn: []string{
				"ExternalSecret/ns1/e: spec.data[0].remoteRef.property: unset",
				"ExternalSecret/ns1/e: spec.data[1].remoteRef.key: starts with the store's path secret",
				"ExternalSecret/ns1/e: spec.data[2].sourceRef.generatorRef: no equivalent",
				"ExternalSecret/ns1/e: spec.dataFrom[0].find: no equivalent",
				"ExternalSecret/ns1/e: spec.target.creationPolicy: Merge: no equivalent",
				"ExternalSecret/ns1/e: spec.target.template.data: copied as written",
				"SecretStore/ns1/st: spec.provider.vault.auth.kubernetes.serviceAccountRef.audiences: unset",
			},
		},
		{
			name: "a static token store: its ExternalSecrets still convert, naming the VaultAuth to write",
			input: `
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {name: tok, namespace: ns1}
spec:
  provider:
    vault:
      server: https://vault.example:8200
      path: secret
      auth: {tokenSecretRef: {name: vault-token, key: token}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: e, namespace: ns1}
spec:
  secretStoreRef: {name: tok}
  dataFrom: [{extract: {key: app}}]
`,
			check: func(t *testing.T, c converted) {
				if len(c.auths) != 0 || c.secrets["ns1/e"].Spec.AuthRef.Name != "tok" {
					t.Errorf("auths %v, secret %+v", c.auths, c.secrets["ns1/e"].Spec)
				}
			},
			warn: []string{
				"SecretStore/ns1/tok: spec.provider.vault.auth.tokenSecretRef: no equivalent",
				"ExternalSecret/ns1/e: spec.secretStoreRef: the store's login has no equivalent: authRef names VaultAuth tok, which you must write",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := run(t, tc.input, Options{})
			if tc.check != nil {
				tc.check(t, c)
			}
			for _, w := range tc.warn {
				if !strings.Contains(c.warnings, w) {
					t.Errorf("warnings:\n%s\nwant a line containing %q", c.warnings, w)
				}
			}
		})
	}
}
