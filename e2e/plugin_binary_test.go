package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

func buildPlugin(t *testing.T) string {
	t.Helper()
	return harness.GoBuild(t, "github.com/vaultkms/vaultkms/cmd/vaultkms-plugin")
}

type runningPlugin struct {
	cmd  *exec.Cmd
	log  *harness.SyncBuffer
	done chan error
}

func startPluginBinary(t *testing.T, env []string) *runningPlugin {
	t.Helper()
	rp := &runningPlugin{log: &harness.SyncBuffer{}, done: make(chan error, 1)}
	rp.cmd = exec.Command(buildPlugin(t))
	rp.cmd.Env = append(os.Environ(), env...)
	rp.cmd.Stdout, rp.cmd.Stderr = rp.log, rp.log
	rp.cmd.SysProcAttr = harness.KillWithParent(&syscall.SysProcAttr{})
	if err := rp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { rp.done <- rp.cmd.Wait() }()
	t.Cleanup(func() {
		rp.cmd.Process.Kill()
		<-rp.done
	})
	return rp
}

func TestPluginBinary(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	pluginPolicy(v)
	tok := v.Write("auth/token/create", map[string]any{"policies": []string{"kms-plugin"}, "ttl": "1h"}).Auth.ClientToken
	tokenFile := harness.TokenFile(t, tok)
	sockDir := filepath.Join(harness.SocketDir(t), "run")
	socket := filepath.Join(sockDir, "kms.sock")
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	health := "127.0.0.1:" + strconv.Itoa(port)
	env := []string{
		"VAULTKMS_LISTEN=unix://" + socket,
		"VAULTKMS_VAULT_ADDR=" + v.Addr,
		"VAULTKMS_VAULT_CA_CERT=" + v.CA.CertFile,
		"VAULTKMS_TRANSIT_KEY=" + key,
		"VAULTKMS_AUTH_METHOD=token",
		"VAULTKMS_TOKEN_FILE=" + tokenFile,
		"VAULTKMS_HEALTH_ADDR=" + health,
		"VAULT_TOKEN=must-not-be-used",
		// None of these may change anything; a malformed one must not
		// even stop the client from being built.
		"VAULT_ADDR=http://127.0.0.1:1", "VAULT_AGENT_ADDR=http://127.0.0.1:1",
		"VAULT_SKIP_VERIFY=not-a-bool", "VAULT_NAMESPACE=elsewhere", "VAULT_HEADERS=not-json",
	}
	rp := startPluginBinary(t, env)
	waitHTTP(t, "http://"+health+"/readyz", 200, 30*time.Second)

	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want srw-------", fi.Mode())
	}
	di, _ := os.Stat(sockDir)
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %v, want 0700", di.Mode().Perm())
	}
	c := harness.DialKMS(t, socket)
	roundTrip(t, c, "through the binary")

	metrics := get(t, "http://"+health+"/metrics")
	for _, want := range []string{
		"vaultkms_plugin_build_info{", "vaultkms_plugin_transit_key_version 1", "vaultkms_plugin_healthy 1",
		`vaultkms_plugin_kms_operation_duration_seconds_count{method="encrypt",result="OK"}`,
		`vaultkms_plugin_transit_batch_size_count{operation="decrypt"}`, "vaultkms_plugin_vault_token_ttl_seconds",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A second instance on the same socket refuses to start.
	port2, _ := harness.FreePort()
	second := exec.Command(buildPlugin(t))
	second.Env = append(os.Environ(), append(env, "VAULTKMS_HEALTH_ADDR=127.0.0.1:"+strconv.Itoa(port2))...)
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another process is serving") {
		t.Fatalf("second instance: err=%v output=%s", err, out)
	}
	roundTrip(t, c, "first instance still serves")

	// SIGTERM: clean exit, socket removed.
	rp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-rp.done:
		rp.done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, rp.log.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("plugin did not stop within 15s of SIGTERM")
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after SIGTERM: %v", err)
	}
	if strings.Contains(rp.log.String(), tok) || strings.Contains(rp.log.String(), v.RootToken) {
		t.Fatal("a token appeared in the plugin's log")
	}

	// A socket file left by a killed plugin is replaced.
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	startPluginBinary(t, env)
	waitHTTP(t, "http://"+health+"/readyz", 200, 30*time.Second)
	roundTrip(t, harness.DialKMS(t, socket), "after a stale socket")
}

func TestPluginBinaryRejectsBadFlags(t *testing.T) {
	t.Parallel()
	bin := buildPlugin(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--vault-addr=https://127.0.0.1:1"}, "--transit-key is required"},
		{[]string{"--transit-key=k", "--vault-addr=https://127.0.0.1:1", "--auth-method=token"}, "--token-file"},
		{[]string{"--transit-key=k", "--vault-addr=https://127.0.0.1:1", "--auth-method=ldap"}, `--auth-method "ldap"`},
		{[]string{"--transit-key=k", "--vault-addr=https://127.0.0.1:1", "--listen=tcp://0.0.0.0:1"}, "only unix://"},
		{[]string{"--transit-key=k", "--vault-addr=https://127.0.0.1:1", "--socket-mode=rw"}, "--socket-mode"},
		{[]string{"--transit-key=k", "--vault-addr=https://127.0.0.1:1", "--auth-method=approle"}, "--approle-role-id-file"},
	}
	for _, tc := range cases {
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: err=%v output=%q, want it to name %q", tc.args, err, out, tc.want)
		}
	}
}

func waitHTTP(t *testing.T, url string, code int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode == code {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, body, code)
			}
		} else {
			cancel()
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", url, err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
