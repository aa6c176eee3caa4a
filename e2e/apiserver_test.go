package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

const provider = "vault"

// TestAPIServerEncryptsThroughVault drives a real kube-apiserver and etcd
// through the plugin: what lands in etcd, rotation, a restart with an empty
// DEK cache, and the readiness check while Vault is away.
func TestAPIServerEncryptsThroughVault(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, RefreshInterval: time.Second})
	keyID1 := p.WaitKeyID(t, 20*time.Second)
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{EncryptionConfig: harness.KMSEncryptionConfig(provider, p.Socket)})
	ctx := context.Background()

	create := func(name, value string) {
		t.Helper()
		_, err := cp.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Data:       map[string][]byte{"value": []byte(value)},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create secret %s: %v", name, err)
		}
	}
	stored := func(name string) storedvalue.Value {
		t.Helper()
		raw := cp.RawGet("/registry/secrets/default/" + name)
		sv, err := storedvalue.Classify(raw)
		if err != nil {
			t.Fatalf("classify %s: %v", name, err)
		}
		return sv
	}

	t.Run("a secret lands in etcd wrapped under the plugin's key_id", func(t *testing.T) {
		create("first", "hunter2-first")
		raw := cp.RawGet("/registry/secrets/default/first")
		prefix := "k8s:enc:kms:v2:" + provider + ":"
		if !bytes.HasPrefix(raw, []byte(prefix)) {
			t.Fatalf("etcd value starts %q, want %q", raw[:min(len(raw), 32)], prefix)
		}
		if bytes.Contains(raw, []byte("hunter2-first")) {
			t.Fatal("plaintext found in etcd")
		}
		sv := stored("first")
		if sv.KeyID != keyID1 {
			t.Fatalf("stored key_id %q, want %q", sv.KeyID, keyID1)
		}
		if _, err := transitkey.ParseKeyID(sv.KeyID); err != nil {
			t.Fatalf("stored key_id does not parse: %v", err)
		}
		got, err := cp.Client.CoreV1().Secrets("default").Get(ctx, "first", metav1.GetOptions{})
		if err != nil || string(got.Data["value"]) != "hunter2-first" {
			t.Fatalf("read back: %v", err)
		}
	})

	t.Run("after a rotation new writes carry the new key_id", func(t *testing.T) {
		v.Write(mount+"/keys/"+key+"/rotate", nil)
		start := time.Now()
		var keyID2 string
		for i := 0; ; i++ {
			name := fmt.Sprintf("rot-%d", i)
			create(name, "value-"+name)
			if id := stored(name).KeyID; id != keyID1 {
				keyID2 = id
				break
			}
			if time.Since(start) > 150*time.Second {
				t.Fatalf("new writes still carry %q %s after the rotation", keyID1, time.Since(start))
			}
			time.Sleep(2 * time.Second)
		}
		t.Logf("new key_id in etcd %s after the rotation", time.Since(start).Round(time.Second))
		k2, err := transitkey.ParseKeyID(keyID2)
		if err != nil || k2.Version != 2 || keyID2 != p.Plugin.CurrentKeyID() {
			t.Fatalf("key_id after rotation %q (%v), plugin reports %q", keyID2, err, p.Plugin.CurrentKeyID())
		}
		if stored("first").KeyID != keyID1 {
			t.Fatal("an untouched secret changed key_id")
		}
	})

	t.Run("after an API server restart every secret reads back", func(t *testing.T) {
		before, err := cp.Client.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{}
		for _, s := range before.Items {
			if v, ok := s.Data["value"]; ok {
				want[s.Name] = string(v)
			}
		}
		cp.RestartAPIServer()
		after, err := cp.Client.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list after restart: %v", err)
		}
		got := map[string]string{}
		for _, s := range after.Items {
			if v, ok := s.Data["value"]; ok {
				got[s.Name] = string(v)
			}
		}
		if len(want) < 2 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after restart read %d secrets, want %d", len(got), len(want))
		}
	})

	t.Run("readyz kms-providers fails while Vault is down and recovers", func(t *testing.T) {
		waitReadyz(t, cp, true, 60*time.Second)
		v.Stop()
		waitReadyz(t, cp, false, 90*time.Second)
		v.Start()
		v.Unseal()
		waitReadyz(t, cp, true, 90*time.Second)
		create("after-outage", "still-works")
		if stored("after-outage").KeyID != p.Plugin.CurrentKeyID() {
			t.Fatal("write after the outage is not under the current key_id")
		}
	})
}

func waitReadyz(t *testing.T, cp *harness.ControlPlane, want bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok, body := cp.Readyz(ctx, "kms-providers")
		cancel()
		if ok == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz/kms-providers ok=%v after %s, want %v: %s", ok, timeout, want, strings.TrimSpace(body))
		}
		time.Sleep(time.Second)
	}
}
