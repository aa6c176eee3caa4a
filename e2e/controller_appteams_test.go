package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// createDeployment makes a Deployment of no replicas (nothing runs; its
// pod template is what a rollout restart patches).
func (s *syncerStack) createDeployment(t *testing.T, ns, name string, labels map[string]string) {
	t.Helper()
	replicas := int32(0)
	sel := map[string]string{"app": name}
	if err := s.c.Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}},
	}); err != nil {
		t.Fatal(err)
	}
}

func (s *syncerStack) deployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func (s *syncerStack) forceSync(t *testing.T, ns, name, value string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		var vs v1alpha1.VaultSecret
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &vs); err != nil {
			return err
		}
		if vs.Annotations == nil {
			vs.Annotations = map[string]string{}
		}
		vs.Annotations["secrets.vaultkms.io/force-sync"] = value
		return s.c.Update(context.Background(), &vs)
	})
}

// TestRolloutRestartDebounce: two VaultSecrets whose data changes one
// after the other restart the Deployment they share twice (at once, then
// at the end of --restart-min-interval), never three times; a selector restarts exactly
// the Deployments whose labels match; a controller restart restarts
// nothing.
func TestRolloutRestartDebounce(t *testing.T) {
	t.Parallel()
	const interval = 8 * time.Second
	s := startSyncerStack(t, stackOptions{args: []string{"--restart-min-interval=" + interval.String()}})
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/one", map[string]any{"data": map[string]any{"v": "1"}})
	s.v.Write("secret/data/app/two", map[string]any{"data": map[string]any{"v": "1"}})
	s.createDeployment(t, "app", "web", nil)
	s.createDeployment(t, "app", "api", map[string]string{"tier": "back"})
	s.createDeployment(t, "app", "ui", map[string]string{"tier": "front"})
	for _, m := range []string{`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: one, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/one}}
  ttl: 1h
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: two, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/two}}
  ttl: 1h
  rolloutRestartTargets:
    - {kind: Deployment, name: web}
    - {kind: Deployment, selector: {matchLabels: {tier: back}}}
`} {
		if _, err := s.apply(t, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"one", "two"} {
		s.waitReady(t, "app", n, metav1.ConditionTrue, "Synced", 30*time.Second)
	}
	gen0 := s.deployment(t, "app", "web").Generation
	if a := s.deployment(t, "app", "web").Spec.Template.Annotations["secrets.vaultkms.io/restartedAt"]; a != "" {
		t.Fatalf("web restarted (%s) by a first sync: only changed data restarts", a)
	}

	// New data for one: web restarts at once. New data for two right
	// after: web's next restart waits for the end of the interval, and
	// only one more happens, however many asked. (Both asked at the same
	// instant may share the first restart: the queue holds a workload
	// once, which is why the two come one after the other here.)
	s.v.Write("secret/data/app/one", map[string]any{"data": map[string]any{"v": "2"}})
	s.forceSync(t, "app", "one", "1")
	s.waitSecret(t, "app", "one", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "2" })
	var first time.Time
	eventually(t, 30*time.Second, func() error {
		if s.deployment(t, "app", "web").Generation < gen0+1 {
			return errors.New("web not restarted after new data")
		}
		first = time.Now()
		return nil
	})
	s.v.Write("secret/data/app/two", map[string]any{"data": map[string]any{"v": "2"}})
	s.forceSync(t, "app", "two", "1")
	s.waitSecret(t, "app", "two", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "2" })
	if g := s.deployment(t, "app", "web").Generation; g != gen0+1 && time.Since(first) < interval-2*time.Second {
		t.Fatalf("web at generation %d %s after its first restart: want %d until --restart-min-interval (%s) ends", g, time.Since(first), gen0+1, interval)
	}
	eventually(t, interval+30*time.Second, func() error {
		if g := s.deployment(t, "app", "web").Generation; g != gen0+2 {
			return fmt.Errorf("web at generation %d, want %d (two restarts)", g, gen0+2)
		}
		return nil
	})
	if gap := time.Since(first); gap < interval-2*time.Second {
		t.Fatalf("second restart of web %s after the first, want at least about %s (--restart-min-interval)", gap, interval)
	}
	time.Sleep(2 * time.Second)
	if g := s.deployment(t, "app", "web").Generation; g != gen0+2 {
		t.Fatalf("web at generation %d after settling, want %d: one restart per interval", g, gen0+2)
	}
	eventually(t, 10*time.Second, func() error {
		if s.deployment(t, "app", "api").Spec.Template.Annotations["secrets.vaultkms.io/restartedAt"] == "" {
			return errors.New("api (tier=back) not restarted by the selector")
		}
		return nil
	})
	if a := s.deployment(t, "app", "ui").Spec.Template.Annotations["secrets.vaultkms.io/restartedAt"]; a != "" {
		t.Fatalf("ui (tier=front) restarted (%s): the selector picks tier=back only", a)
	}

	// A controller restart reads and restarts nothing.
	genBefore := s.deployment(t, "app", "web").Generation
	s.restartController(t)
	time.Sleep(interval + 2*time.Second)
	for _, n := range []string{"one", "two"} {
		s.waitReady(t, "app", n, metav1.ConditionTrue, "Synced", 10*time.Second)
	}
	if g := s.deployment(t, "app", "web").Generation; g != genBefore {
		t.Fatalf("web went from generation %d to %d across a controller restart with no new data", genBefore, g)
	}
}

// TestOwedRestartOutlivesTheController: new data whose rollout restart
// waits for the end of --restart-min-interval when the controller stops is
// restarted by the controller that comes next, and status says a restart
// is pending until it is done; a restart carried out is not repeated by a
// later controller restart.
func TestOwedRestartOutlivesTheController(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t, stackOptions{args: []string{"--restart-min-interval=1h"}})
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/owed", map[string]any{"data": map[string]any{"v": "1"}})
	s.createDeployment(t, "app", "web", nil)
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: owed, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/owed}}
  ttl: 1h
  rolloutRestartTargets: [{kind: Deployment, name: web}]
`); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "app", "owed", metav1.ConditionTrue, "Synced", 30*time.Second)
	gen0 := s.deployment(t, "app", "web").Generation
	pending := func() *metav1.Time { return s.vaultSecret(t, "app", "owed").Status.RestartPendingSince }

	// New data: web restarts at once, and status no longer says pending.
	s.v.Write("secret/data/app/owed", map[string]any{"data": map[string]any{"v": "2"}})
	s.forceSync(t, "app", "owed", "1")
	eventually(t, 30*time.Second, func() error {
		if g := s.deployment(t, "app", "web").Generation; g != gen0+1 {
			return fmt.Errorf("web at generation %d, want %d after new data", g, gen0+1)
		}
		if p := pending(); p != nil {
			return fmt.Errorf("status.restartPendingSince = %s after web's restart, want unset", p)
		}
		return nil
	})

	// Newer data within the interval: its restart waits an hour, and
	// status says it is owed.
	s.v.Write("secret/data/app/owed", map[string]any{"data": map[string]any{"v": "3"}})
	s.forceSync(t, "app", "owed", "2")
	s.waitSecret(t, "app", "owed", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "3" })
	eventually(t, 10*time.Second, func() error {
		if pending() == nil {
			return errors.New("status.restartPendingSince unset while web's restart for v3 waits")
		}
		return nil
	})
	if g := s.deployment(t, "app", "web").Generation; g != gen0+1 {
		t.Fatalf("web at generation %d within --restart-min-interval, want %d", g, gen0+1)
	}

	// The controller that comes next carries it out.
	s.restartController(t)
	eventually(t, 60*time.Second, func() error {
		if g := s.deployment(t, "app", "web").Generation; g != gen0+2 {
			return fmt.Errorf("web at generation %d after a controller restart with a restart owed, want %d", g, gen0+2)
		}
		if p := pending(); p != nil {
			return fmt.Errorf("status.restartPendingSince = %s after the owed restart, want unset", p)
		}
		return nil
	})
	if !strings.Contains(s.log.String(), "carrying out rollout restarts owed") {
		t.Errorf("the new controller never logged the owed restart it carried out")
	}

	// Carried out, it is not owed again: a pass of the next controller
	// (made sure of by a forced read, of unchanged data) restarts nothing.
	s.restartController(t)
	restarted := time.Now().Add(-time.Second)
	s.forceSync(t, "app", "owed", "3")
	eventually(t, 30*time.Second, func() error {
		if ls := s.vaultSecret(t, "app", "owed").Status.LastSyncTime; ls == nil || ls.Time.Before(restarted) {
			return fmt.Errorf("status.lastSyncTime %v: no pass of the new controller yet", ls)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	if g := s.deployment(t, "app", "web").Generation; g != gen0+2 {
		t.Fatalf("web at generation %d after a restart with nothing owed, want %d", g, gen0+2)
	}
}

// TestRefreshIntervalAndAdopt: spec.refreshInterval reads Vault on its own
// schedule, independent of ttl; target.adopt takes over a Secret another
// controller made without the Secret ever being missing.
func TestRefreshIntervalAndAdopt(t *testing.T) {
	t.Parallel()
	s := startSyncerStack(t)
	ctx := context.Background()
	s.v.Policy("app-read", `path "secret/data/app/*" { capabilities = ["read"] }`)
	s.role("app", "app", "app-read", nil)
	s.v.Write("secret/data/app/often", map[string]any{"data": map[string]any{"v": "1"}})

	// ttl 1h would read again after 40 minutes; refreshInterval 5s reads
	// every 5 s.
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: often, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/often}}
  ttl: 1h
  refreshInterval: 5s
`); err != nil {
		t.Fatal(err)
	}
	sec := s.waitSecret(t, "app", "often", 30*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "1" })
	exp, err := time.Parse(time.RFC3339, sec.Annotations["secrets.vaultkms.io/expires-at"])
	if err != nil || time.Until(exp) < 50*time.Minute {
		t.Fatalf("expires-at %q: want about an hour away (ttl stays the lifetime)", sec.Annotations["secrets.vaultkms.io/expires-at"])
	}
	s.v.Write("secret/data/app/often", map[string]any{"data": map[string]any{"v": "2"}})
	s.waitSecret(t, "app", "often", 20*time.Second, func(sec *corev1.Secret) bool { return string(sec.Data["v"]) == "2" })

	// Admission: refreshInterval not shorter than ttl, and on a pki
	// source, are refused with the field named.
	for _, bad := range []struct{ manifest, want string }{
		{`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: slow, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/often}}
  ttl: 30s
  refreshInterval: 1m
`, "refreshInterval must be shorter than ttl"},
		{`
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: cert, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {pki: {mount: pki, role: web, commonName: a.example}}
  refreshInterval: 1m
`, "refreshInterval is for kv sources"},
	} {
		err := s.applyRaw(t, bad.manifest)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("apply: %v, want a refusal saying %q", err, bad.want)
		}
	}

	// A Secret another controller made (it controls it through an owner
	// reference), holding a key vaultkms will not write.
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "other-operator"}}
	if err := s.c.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	yes := true
	legacy := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "legacy",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID, Controller: &yes}}},
		Data: map[string][]byte{"v": []byte("old"), "_raw": []byte("old")}}
	if err := s.c.Create(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	manifest := `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: legacy, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/often}}
  ttl: 1h
  target: {adopt: %v}
`
	if _, err := s.apply(t, fmt.Sprintf(manifest, false)); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "app", "legacy", metav1.ConditionFalse, "SecretConflict", 30*time.Second)
	if got := s.waitSecret(t, "app", "legacy", time.Second, func(*corev1.Secret) bool { return true }); string(got.Data["v"]) != "old" {
		t.Fatal("a Secret of another controller was written without target.adopt")
	}
	eventually(t, 10*time.Second, func() error { // the controller writes status meanwhile: retry conflicts
		var vs v1alpha1.VaultSecret
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "legacy"}, &vs); err != nil {
			return err
		}
		vs.Spec.Target.Adopt = true
		return s.c.Update(ctx, &vs)
	})
	s.waitReady(t, "app", "legacy", metav1.ConditionTrue, "Synced", 30*time.Second)
	got := s.waitSecret(t, "app", "legacy", time.Second, func(*corev1.Secret) bool { return true })
	if got.UID != legacy.UID {
		t.Fatal("the adopted Secret was deleted and recreated: applications would have seen it missing")
	}
	if string(got.Data["v"]) != "2" || got.Data["_raw"] != nil {
		t.Fatalf("adopted Secret holds keys %v (v=%q), want only Vault's data", keys(got.Data), got.Data["v"])
	}
	ref := metav1.GetControllerOf(got)
	if ref == nil || ref.Kind != "VaultSecret" || ref.Name != "legacy" {
		t.Fatalf("adopted Secret's controller is %+v, want the VaultSecret", ref)
	}
	// Another VaultSecret naming the same Secret never takes it, adopt or
	// not.
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: thief, namespace: app}
spec:
  auth: {kubernetes: {role: app, serviceAccountName: app}}
  source: {kv: {mount: secret, path: app/often}}
  ttl: 1h
  target: {name: legacy, adopt: true}
`); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, "app", "thief", metav1.ConditionFalse, "SecretConflict", 30*time.Second)
	if ref := metav1.GetControllerOf(s.waitSecret(t, "app", "legacy", time.Second, func(*corev1.Secret) bool { return true })); ref == nil || ref.Name != "legacy" {
		t.Fatalf("the Secret's controller is %+v after another VaultSecret asked to adopt it", ref)
	}
}
