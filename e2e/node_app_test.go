package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// valueDigest is what e2e/harness/nodeapp prints for a value (never the
// value itself).
func valueDigest(v string) string {
	s := sha256.Sum256([]byte(v))
	return hex.EncodeToString(s[:8])
}

// testAppRollout runs two applications reading Secret "config" of ns:
// "reader", a rollout restart target of the VaultSecret, and "watcher",
// which is not. After the value changes in Vault, reader's new pods start
// with the new value in their environment, and the file mounted in
// watcher's running pod changes (the kubelet's Secret propagation).
func testAppRollout(t *testing.T, cp *harness.ControlPlane, v *harness.Vault, ns, image string) {
	ctx := context.Background()
	reader := readerDeployment(ns, image)
	watcher := readerDeployment(ns, image)
	watcher.Name = "watcher"
	watcher.Spec.Selector.MatchLabels = map[string]string{"app": "watcher"}
	watcher.Spec.Template.Labels = map[string]string{"app": "watcher"}
	for _, d := range []string{"reader", "watcher"} {
		dep := reader
		if d == "watcher" {
			dep = watcher
		}
		if _, err := cp.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Deployment %s: %v", d, err)
		}
	}
	old, newer := valueDigest("node-pw-1"), valueDigest("node-pw-2")
	first := waitAppPod(t, cp, ns, "reader", "", "start env="+old, 2*time.Minute)
	watching := waitAppPod(t, cp, ns, "watcher", "", "file="+old, 2*time.Minute)

	v.Write("secret/data/app/config", map[string]any{"data": map[string]any{"password": "node-pw-2"}})
	changed := time.Now()
	waitSecretValue(t, cp, ns, "config", "password", "node-pw-2", 60*time.Second)
	second := waitAppPod(t, cp, ns, "reader", first, "start env="+newer, 2*time.Minute)
	t.Logf("rollout restart: pod %s replaced by %s with the new value %s after the change in Vault",
		first, second, time.Since(changed).Round(100*time.Millisecond))

	// The watcher's pod is the same one and was not restarted: the file
	// changed under it.
	eventually(t, 3*time.Minute, func() error {
		log, err := podLog(cp, ns, watching)
		if err != nil {
			return err
		}
		if !strings.Contains(log, "file="+newer) {
			return fmt.Errorf("the mounted file in running pod %s has not changed yet", watching)
		}
		return nil
	})
	t.Logf("the mounted file changed in running pod %s %s after the change in Vault", watching, time.Since(changed).Round(100*time.Millisecond))
	p, err := cp.Client.CoreV1().Pods(ns).Get(ctx, watching, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the watcher pod went away (it is no rollout restart target): %v", err)
	}
	if n := p.Status.ContainerStatuses[0].RestartCount; n != 0 {
		t.Fatalf("the watcher restarted %d times: the file change was not seen by a running container", n)
	}
}

// waitAppPod waits for a Ready pod of Deployment app (label app=<app>),
// other than not, whose log contains want, and returns its name.
func waitAppPod(t *testing.T, cp *harness.ControlPlane, ns, app, not, want string, d time.Duration) string {
	t.Helper()
	var name string
	eventually(t, d, func() error {
		pods, err := cp.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Name == not || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
				continue
			}
			log, err := podLog(cp, ns, p.Name)
			if err != nil {
				return err
			}
			if strings.Contains(log, want) {
				name = p.Name
				return nil
			}
		}
		return fmt.Errorf("no running pod of %s (other than %q) logged %q yet", app, not, want)
	})
	return name
}

// podLog reads a pod's log through the API server, which fetches it from
// the kubelet at the node's InternalIP.
func podLog(cp *harness.ControlPlane, ns, pod string) (string, error) {
	b, err := cp.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(context.Background())
	return string(b), err
}
