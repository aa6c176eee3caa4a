package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	kmsapi "k8s.io/kms/apis/v2"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// startPluginProcess runs the vaultkms-plugin binary against v as users run
// it, a process of its own beside the caller, with the root token in a
// file, and returns a client of its socket once it reports a key_id.
func startPluginProcess(env *harness.Main, v *harness.Vault, key string, inflight int) (kmsapi.KeyManagementServiceClient, string) {
	bin := harness.GoBuild(env, "github.com/vaultkms/vaultkms/cmd/vaultkms-plugin")
	sock := filepath.Join(harness.SocketDir(env), "kms.sock")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"VAULTKMS_LISTEN=unix://"+sock,
		"VAULTKMS_VAULT_ADDR="+v.Addr,
		"VAULTKMS_VAULT_CA_CERT="+v.CA.CertFile,
		"VAULTKMS_TRANSIT_KEY="+key,
		"VAULTKMS_AUTH_METHOD=token",
		"VAULTKMS_TOKEN_FILE="+harness.TokenFile(env, v.RootToken),
		"VAULTKMS_HEALTH_ADDR=127.0.0.1:0")
	if inflight > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("VAULTKMS_MAX_INFLIGHT=%d", inflight))
	}
	log := &harness.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = harness.KillWithParent(&syscall.SysProcAttr{})
	if err := cmd.Start(); err != nil {
		env.Fatalf("start %s: %v", bin, err)
	}
	env.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	kms := harness.DialKMS(env, sock)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := kms.Status(context.Background(), &kmsapi.StatusRequest{})
		if err == nil && st.KeyId != "" && st.Healthz == "ok" {
			return kms, "the vaultkms-plugin binary, a process of its own"
		}
		if time.Now().After(deadline) {
			env.Fatalf("plugin process reported no key_id in 30s (status %v, %v):\n%s", st, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
