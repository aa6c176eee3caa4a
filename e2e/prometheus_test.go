package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
)

// alertWithin bounds the wait for an alert to fire or resolve: a failure
// is noticed within a few seconds (1s scrapes, 5s refreshes and scans),
// `for` is 2s, and the controller retries a failing VaultSecret after half
// the time it has failed.
const alertWithin = 90 * time.Second

// TestPrometheusAlerts runs a real Prometheus against the plugin (binary,
// /metrics on its --health-addr), the controller, the auditor with the
// rotation autopilot, and kube-apiserver, scraped as the chart's
// ServiceMonitors and docs/metrics.md say, with the chart's PrometheusRule
// as rendered by `helm template`. Each alert is brought about for real and
// must fire, then resolve once the cause is gone; the rendered Grafana
// dashboard's every query must return series.
func TestPrometheusAlerts(t *testing.T) {
	t.Parallel()
	manifest, err := helmTemplate(t, "vaultkms", promNamespace, promChartValues...)
	if err != nil {
		t.Fatal(err)
	}
	chart := renderedObjects(t, manifest)

	// Vault, and the plugin binary encrypting the API server's Secrets and
	// ConfigMaps with its Transit key, re-read every second.
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	pluginPolicy(v)
	pluginToken := v.Write("auth/token/create", map[string]any{"policies": []string{"kms-plugin"}, "ttl": "1h"}).Auth.ClientToken
	pluginTokenFile := harness.TokenFile(t, pluginToken)
	socket := filepath.Join(harness.SocketDir(t), "kms.sock")
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pluginAddr := "127.0.0.1:" + strconv.Itoa(port)
	plugin := startPluginBinary(t, []string{
		"VAULTKMS_LISTEN=unix://" + socket, "VAULTKMS_VAULT_ADDR=" + v.Addr, "VAULTKMS_VAULT_CA_CERT=" + v.CA.CertFile,
		"VAULTKMS_TRANSIT_KEY=" + key, "VAULTKMS_AUTH_METHOD=token", "VAULTKMS_TOKEN_FILE=" + pluginTokenFile,
		"VAULTKMS_HEALTH_ADDR=" + pluginAddr, "VAULTKMS_KEY_REFRESH_INTERVAL=1s", "VAULTKMS_VAULT_TIMEOUT=2s",
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("plugin log:\n%s", plugin.log.String())
		}
	})
	waitHTTP(t, "http://"+pluginAddr+"/readyz", 200, 30*time.Second)
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{
		EncryptionConfig: harness.KMSEncryptionConfig(provider, socket, "secrets", "configmaps"),
		CRDDirs:          []string{harness.RepoPath(t, "charts/vaultkms/crds")}})

	// The controller, serving a tenant's KV VaultSecret (which restarts a
	// Deployment when its data changes) and a dynamic one (PostgreSQL),
	// electing a leader as the chart's does.
	s := startSyncerStack(t, stackOptions{vault: v, controlPlane: cp, args: []string{"--leader-elect"}})
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "pw-1"}})
	s.createDeployment(t, "app", "web", nil)
	applyOK(t, s, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: app-config, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/config}}
  ttl: 15s
  refreshInterval: 5s
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`)
	pg := harness.StartPostgres(t)
	setupDatabase(t, s, pg, "3m", "10m")
	s.role("db", "app", "db-creds", nil)
	applyOK(t, s, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db, namespace: app}
spec:
  auth: {kubernetes: {role: db, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10m
`)
	s.waitReady(t, "app", "app-config", metav1.ConditionTrue, "Synced", 60*time.Second)
	s.waitReady(t, "app", "db", metav1.ConditionTrue, "Synced", 60*time.Second)
	// New data: the Deployment is restarted.
	s.v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "pw-2"}})

	// The auditor with the autopilot, reaching etcd through a proxy that
	// does not answer yet (an auditor started against an unreachable
	// etcd: VaultKMSScanFailing's "no successful scan since it started"
	// branch), and a rotation identity that may not rotate.
	etcdProxy := startBlackHole(t, strings.TrimPrefix(cp.EtcdURL, "http://"))
	etcdProxy.hole()
	holed := time.Now()
	ap := &autopilotCluster{v: v, cp: cp, plugin: &harness.Plugin{Socket: socket}, kc: s.c,
		metrics: []string{strings.TrimSuffix(cp.Config.Host, "/") + "/metrics"}}
	auditor := ap.startRotationAuditor(t, rotationWithoutRotate(mount, key),
		"--etcd-endpoints=http://"+etcdProxy.ln.Addr().String(), "--etcd-request-timeout=2s", "--etcd-dial-timeout=2s")

	prom := harness.StartPrometheus(t, harness.PrometheusConfig{
		ScrapeConfigs: append(serviceMonitorScrapes(t, chart, map[string]string{"controller": hostPort(t, s.ctl.MetricsURL), "auditor": hostPort(t, auditor.MetricsURL)}),
			pluginScrape(pluginAddr), apiServerScrape(t, cp)),
		RuleGroups: chartRuleGroups(t, chart),
	})
	start := time.Now()
	for _, job := range []string{"vaultkms-controller-metrics", "vaultkms-auditor-metrics", "vaultkms-plugin", "apiserver"} {
		waitSeries(t, prom, fmt.Sprintf(`up{job=%q} == 1`, job))
	}
	// kube-apiserver's side of the KMS provider.
	waitSeries(t, prom, `apiserver_envelope_encryption_key_id_hash_total{job="apiserver",provider_name="vault"}`)
	waitSeries(t, prom, `apiserver_storage_transformation_operations_total{job="apiserver",transformer_prefix=~"k8s:enc:kms:v2:vault:.*",status="OK"}`)
	waitSeries(t, prom, `vaultkms_controller_restarts_total{namespace="app",kind="Deployment",result="ok"} > 0`)
	waitSeries(t, prom, `vaultkms_controller_lease_operations_total{operation="issue",result="ok"} > 0`)

	tenant := map[string]string{"namespace": "app"}
	for _, a := range []struct {
		name   string
		labels map[string]string
	}{{"VaultKMSPluginUnhealthy", nil}, {"VaultKMSPluginVaultLoginFailing", nil}, {"VaultKMSVaultSecretFailing", tenant}, {"VaultKMSVaultSecretExpiring", tenant},
		{"VaultKMSScanFailing", nil}, {"VaultKMSControllerDown", nil}, {"VaultKMSAuditorAbsent", nil}, {"VaultKMSStaleObjects", nil}} {
		prom.WaitAlert(t, a.name, a.labels, harness.AlertInactive, alertWithin)
	}

	// VaultKMSScanFailing waits for the auditor to be scanMaxAgeSeconds
	// (the schema's least, 60s) old without a successful scan, time the
	// tenant's scenario uses meanwhile.

	t.Run("tenant role removed: VaultSecrets failing and expiring", func(t *testing.T) {
		if _, err := v.Client().Logical().Delete("auth/kubernetes/role/app"); err != nil {
			t.Fatal(err)
		}
		revokeRoleTokens(t, v, "app")
		logFiring(t, "VaultKMSVaultSecretFailing", prom.WaitAlert(t, "VaultKMSVaultSecretFailing", tenant, harness.AlertFiring, alertWithin))
		logFiring(t, "VaultKMSVaultSecretExpiring", prom.WaitAlert(t, "VaultKMSVaultSecretExpiring", tenant, harness.AlertFiring, alertWithin))
		// Past its ttl the Secret is deleted (expiryPolicy Delete).
		s.waitGone(t, "app", "app-config", alertWithin)
		s.role("app", "app", "app-read", nil)
		s.waitReady(t, "app", "app-config", metav1.ConditionTrue, "Synced", alertWithin)
		prom.WaitAlert(t, "VaultKMSVaultSecretFailing", tenant, harness.AlertInactive, alertWithin)
		prom.WaitAlert(t, "VaultKMSVaultSecretExpiring", tenant, harness.AlertInactive, alertWithin)
	})

	t.Run("auditor started with etcd unreachable: no scan ever succeeded", func(t *testing.T) {
		prom.WaitAlert(t, "VaultKMSScanFailing", nil, harness.AlertFiring, alertWithin)
		logFiring(t, "VaultKMSScanFailing", time.Since(holed))
		etcdProxy.restore()
		prom.WaitAlert(t, "VaultKMSScanFailing", nil, harness.AlertInactive, alertWithin)
	})

	t.Run("rotation stopped at a gate, then the key rotated: overdue, stale objects", func(t *testing.T) {
		ctx := context.Background()
		// The key made at the start is older than keyMaxAgeSeconds (60s).
		prom.WaitAlert(t, "VaultKMSKeyRotationOverdue", nil, harness.AlertFiring, alertWithin)
		if err := ap.kc.Create(ctx, ap.policy("gate", 10*time.Second, 0, 120*time.Second)); err != nil {
			t.Fatal(err)
		}
		policy := map[string]string{"policy": "gate"}
		ap.waitPolicy(t, "gate", alertWithin, stopped(v1alpha1.ReasonGateVaultRotate))
		logFiring(t, "VaultKMSRotationStopped", prom.WaitAlert(t, "VaultKMSRotationStopped", policy, harness.AlertFiring, alertWithin))
		// The operator grants rotate and resumes: the cycle goes on.
		v.Policy("vaultkms-rotation", rotationPolicyHCL(mount, key))
		var p v1alpha1.RotationPolicy
		if err := ap.kc.Get(ctx, client.ObjectKey{Name: "gate"}, &p); err != nil {
			t.Fatal(err)
		}
		p.Annotations = map[string]string{v1alpha1.ResumeAnnotation: "1"}
		if err := ap.kc.Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
		prom.WaitAlert(t, "VaultKMSRotationStopped", policy, harness.AlertInactive, alertWithin)
		// The rotation happened: the dashboard's time since the last one
		// has its series, the key is no longer overdue, and every Secret
		// is stale until the autopilot has re-encrypted it.
		waitSeries(t, prom, `vaultkms_auditor_rotation_last_timestamp_seconds{policy="gate"}`)
		prom.WaitAlert(t, "VaultKMSKeyRotationOverdue", nil, harness.AlertInactive, alertWithin)
		secrets := map[string]string{"resource": "secrets"}
		logFiring(t, "VaultKMSStaleObjects", prom.WaitAlert(t, "VaultKMSStaleObjects", secrets, harness.AlertFiring, alertWithin))
		// The cycle re-encrypts, verifies and trims. With a rotation due
		// every 10s a finished cycle would start the next at once: due
		// every hour now, the policy rests once done.
		if err := ap.kc.Patch(ctx, &p, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"rotateEvery":"1h"}}`))); err != nil {
			t.Fatal(err)
		}
		ap.waitPolicy(t, "gate", 3*alertWithin, func(p *v1alpha1.RotationPolicy) bool { return p.Status.Stage == v1alpha1.StageDone })
		prom.WaitAlert(t, "VaultKMSStaleObjects", nil, harness.AlertInactive, alertWithin)
	})

	t.Run("Vault stopped: plugin unhealthy", func(t *testing.T) {
		v.Stop()
		logFiring(t, "VaultKMSPluginUnhealthy", prom.WaitAlert(t, "VaultKMSPluginUnhealthy", nil, harness.AlertFiring, alertWithin))
		v.Start()
		v.Unseal()
		prom.WaitAlert(t, "VaultKMSPluginUnhealthy", nil, harness.AlertInactive, alertWithin)
	})

	t.Run("plugin token revoked: login failing", func(t *testing.T) {
		v.Write("auth/token/revoke", map[string]any{"token": pluginToken})
		logFiring(t, "VaultKMSPluginVaultLoginFailing", prom.WaitAlert(t, "VaultKMSPluginVaultLoginFailing", nil, harness.AlertFiring, alertWithin))
		// A new token in the file, written then renamed as Vault Agent
		// does: the plugin reads it at its next login.
		fresh := v.Write("auth/token/create", map[string]any{"policies": []string{"kms-plugin"}, "ttl": "1h"}).Auth.ClientToken
		if err := os.WriteFile(pluginTokenFile+".new", []byte(fresh), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(pluginTokenFile+".new", pluginTokenFile); err != nil {
			t.Fatal(err)
		}
		prom.WaitAlert(t, "VaultKMSPluginVaultLoginFailing", nil, harness.AlertInactive, alertWithin)
		prom.WaitAlert(t, "VaultKMSPluginUnhealthy", nil, harness.AlertInactive, alertWithin)
	})

	t.Run("controller stopped, then running without the Lease: controller down", func(t *testing.T) {
		ctx := context.Background()
		s.ctl.Stop()
		logFiring(t, "VaultKMSControllerDown", prom.WaitAlert(t, "VaultKMSControllerDown", nil, harness.AlertFiring, alertWithin))
		// Another holder keeps the Lease: the controller runs and is
		// scraped, but does not lead, so nothing syncs.
		leases := cp.Client.CoordinationV1().Leases("vaultkms-system")
		lease, err := leases.Get(ctx, controllerLease, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		holder, seconds, now := "another-replica", int32(3600), metav1.NewMicroTime(time.Now())
		lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds, lease.Spec.AcquireTime, lease.Spec.RenewTime = &holder, &seconds, &now, &now
		if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		s.ctl.Start()
		waitSeries(t, prom, fmt.Sprintf(`leader_election_master_status{job="vaultkms-controller-metrics",name=%q} == 0`, controllerLease))
		// Scraped for a few seconds now, and still down.
		time.Sleep(3 * time.Second)
		prom.WaitAlert(t, "VaultKMSControllerDown", nil, harness.AlertFiring, time.Second)
		if err := leases.Delete(ctx, controllerLease, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		prom.WaitAlert(t, "VaultKMSControllerDown", nil, harness.AlertInactive, alertWithin)
	})

	t.Run("auditor stopped: auditor absent", func(t *testing.T) {
		auditor.Stop()
		logFiring(t, "VaultKMSAuditorAbsent", prom.WaitAlert(t, "VaultKMSAuditorAbsent", nil, harness.AlertFiring, alertWithin))
		auditor.Start()
		prom.WaitAlert(t, "VaultKMSAuditorAbsent", nil, harness.AlertInactive, alertWithin)
	})

	t.Run("every rule evaluates", func(t *testing.T) {
		groups, err := prom.Rules(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, g := range groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					t.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		if n == 0 {
			t.Fatal("no rules loaded")
		}
	})

	t.Run("every dashboard query returns series", func(t *testing.T) {
		checkDashboard(t, prom, dashboardQueries(t, chart), start)
	})
}

// controllerLease is the controller's leader Lease (its
// LeaderElectionID), in its --namespace.
const controllerLease = "vaultkms-controller.secrets.vaultkms.io"

// rotationWithoutRotate is rotationPolicyHCL without update on rotate: the
// autopilot's Vault gate refuses the cycle.
func rotationWithoutRotate(mount, key string) string {
	return fmt.Sprintf(`path "%[1]s/keys/%[2]s" { capabilities = ["read"] }
path "%[1]s/keys/%[2]s/config" { capabilities = ["update"] }
`, mount, key)
}

func applyOK(t *testing.T, s *syncerStack, manifest string) {
	t.Helper()
	if _, err := s.apply(t, manifest); err != nil {
		t.Fatal(err)
	}
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// waitSeries waits until expr returns a series.
func waitSeries(t *testing.T, prom *harness.Prometheus, expr string) {
	t.Helper()
	eventually(t, alertWithin, func() error {
		series, err := prom.Query(context.Background(), expr)
		if err != nil {
			return err
		}
		if len(series) == 0 {
			return fmt.Errorf("%s: no series", expr)
		}
		return nil
	})
}

func logFiring(t *testing.T, alert string, took time.Duration) {
	t.Helper()
	t.Logf("%s firing %s after the cause", alert, took.Round(100*time.Millisecond))
}

// revokeRoleTokens revokes the tokens Vault issued through kubernetes auth
// role: deleting a role leaves the tokens it issued valid, so an operator
// removing a tenant revokes them too.
func revokeRoleTokens(t *testing.T, v *harness.Vault, role string) {
	t.Helper()
	list, err := v.Client().Logical().List("auth/token/accessors")
	if err != nil || list == nil {
		t.Fatalf("list token accessors: %v", err)
	}
	keys, _ := list.Data["keys"].([]any)
	n := 0
	for _, k := range keys {
		info := v.Write("auth/token/lookup-accessor", map[string]any{"accessor": k})
		if meta, _ := info.Data["meta"].(map[string]any); meta["role"] == role {
			v.Write("auth/token/revoke-accessor", map[string]any{"accessor": k})
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no token of role %s to revoke", role)
	}
}
