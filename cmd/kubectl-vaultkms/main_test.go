package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/verifier/keysource"
)

// runCLI runs the command line in-process with captured streams.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), streams{In: strings.NewReader(""), Out: &out, ErrOut: &errb}, args)
	return out.String(), errb.String(), code
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, exitUsage, "Commands:"},
		{"help", []string{"help"}, 0, "Commands:"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"bad output", []string{"verify", "-o", "xml"}, exitUsage, `-o "xml"`},
		{"bad flag", []string{"status", "--no-such-flag"}, exitUsage, "no-such-flag"},
		{"stray argument", []string{"verify", "secrets"}, exitUsage, "unexpected arguments"},
		{"bad fail-on", []string{"verify", "--fail-on", "sometimes"}, exitUsage, "--fail-on"},
		{"relative socket", []string{"verify", "--kms-socket", "run/kms.sock"}, exitUsage, "--kms-socket"},
		{"no key source", []string{"verify", "--etcd-endpoints", "http://127.0.0.1:1"}, exitUsage, "cannot tell the current key_id"},
		{"no etcd", []string{"verify", "--current-key-id", "x"}, exitUsage, "--etcd-endpoints is required"},
		{"wildcard resource", []string{"verify", "--current-key-id", "x", "--etcd-endpoints", "http://127.0.0.1:1", "--resources", "*.*"}, exitUsage, "no wildcards"},
		{"trim without the API server gate", []string{"trim", "--no-apiserver-metrics", "--transit-key", "k", "--vault-addr", "https://127.0.0.1:1"}, exitUsage, "never skips"},
		{"settle time below the API server's rules", []string{"trim", "--transit-key", "k", "--vault-addr", "https://127.0.0.1:1", "--settle-time", "3m"}, exitUsage, "--settle-time 3m0s is too short: it must be at least 4m0s"},
		{"transit key and no Vault", []string{"rotate", "--transit-key", "k"}, exitUsage, `--transit-key "k" needs --vault-addr`},
		{"empty transit mount", []string{"status", "--transit-mount", "/"}, exitUsage, "--transit-mount is empty"},
		{"reencrypt qps", []string{"reencrypt", "--qps", "0"}, exitUsage, "--qps"},
	}
	// The operator's environment is a default of the Vault flags.
	t.Setenv("VAULT_ADDR", "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(out+stderr, tc.want) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", code, tc.code, out, stderr, tc.want)
			}
		})
	}
}

// An etcd endpoint that accepts TCP and never answers must fail within
// the dial timeout, naming the endpoint, instead of hanging.
func TestVerifyEtcdNeverAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Accepted connections stay open and silent until the test ends.
	var conns []net.Conn
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	defer func() {
		l.Close()
		<-stopped
		for _, c := range conns {
			c.Close()
		}
	}()
	ep := "http://" + l.Addr().String()
	start := time.Now()
	_, stderr, code := runCLI(t, "verify", "--current-key-id", "x", "--etcd-endpoints", ep, "--etcd-dial-timeout", "500ms")
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("verify took %s with a 500ms dial timeout", took)
	}
	if code != exitError || !strings.Contains(stderr, ep) || !strings.Contains(stderr, "never answers") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// The kubeconfig flags are kubectl's own, overriding the file.
func TestKubeconfigOverrides(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters:
- {name: a, cluster: {server: "https://a.example:6443"}}
- {name: b, cluster: {server: "https://b.example:6443"}}
users:
- {name: u, user: {token: file-token}}
contexts:
- {name: ca, context: {cluster: a, user: u}}
- {name: cb, context: {cluster: b, user: u}}
current-context: ca
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args       []string
		host, user string
	}{
		{[]string{"--kubeconfig", kc}, "https://a.example:6443", "file-token"},
		{[]string{"--kubeconfig", kc, "--context", "cb"}, "https://b.example:6443", "file-token"},
		{[]string{"--kubeconfig", kc, "--server", "https://c.example:6443", "--token", "flag-token"}, "https://c.example:6443", "flag-token"},
	} {
		c := newCommon("status", streams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
		if err := c.parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg, err := c.restConfig()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Host != tc.host || cfg.BearerToken != tc.user {
			t.Errorf("%v: host %s token %s, want %s %s", tc.args, cfg.Host, cfg.BearerToken, tc.host, tc.user)
		}
	}
	c := newCommon("status", streams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	for _, name := range []string{"kubeconfig", "context", "cluster", "user", "namespace", "server", "token", "certificate-authority", "insecure-skip-tls-verify", "request-timeout"} {
		if c.fs.Lookup(name) == nil {
			t.Errorf("flag --%s missing", name)
		}
	}
}

func TestSocketPath(t *testing.T) {
	for in, want := range map[string]string{
		"/run/vaultkms/kms.sock":        "/run/vaultkms/kms.sock",
		"unix:///run/vaultkms/kms.sock": "/run/vaultkms/kms.sock",
	} {
		got, err := keysource.SocketPath(in)
		if err != nil || got != want {
			t.Errorf("SocketPath(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"kms.sock", "unix://run/kms.sock", ""} {
		if _, err := keysource.SocketPath(bad); err == nil {
			t.Errorf("SocketPath(%q) accepted", bad)
		}
	}
}

func TestUnfinishedRotation(t *testing.T) {
	for _, tc := range []struct {
		latest, min int
		refused     bool
	}{
		{1, 0, false}, {1, 1, false}, {2, 2, false}, {2, 1, true}, {3, 2, true}, {2, 0, true},
	} {
		err := unfinished(keysource.TransitKey{LatestVersion: tc.latest, MinDecryption: tc.min})
		if (err != nil) != tc.refused {
			t.Errorf("latest %d min %d: %v", tc.latest, tc.min, err)
		}
	}
}

// Progress is drawn only on a terminal: a buffer (a pipe, CI) gets nothing.
func TestProgressSilentOffTerminal(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, "scanning", 10)
	p.set("", 5)
	p.done()
	if b.Len() != 0 {
		t.Fatalf("progress wrote %q to a non-terminal", b.String())
	}
}
