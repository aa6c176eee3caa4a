// Package harness starts the real components vaultkms works with (Vault,
// etcd, kube-apiserver, the plugin) on free ports in temporary directories,
// for integration tests, benchmarks and `make demo`. Everything it starts
// is stopped by the Env's cleanup.
package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Env is what the harness needs from its caller; *testing.T and
// *testing.B satisfy it, and so does Main for commands.
type Env interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
}

// BinDir is where `make tools` puts the real components: $VAULTKMS_BIN_DIR,
// or bin/ at the root of the module.
func BinDir() (string, error) {
	if d := os.Getenv("VAULTKMS_BIN_DIR"); d != "" {
		return filepath.Abs(d)
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// ModuleRoot is the root of the vaultkms checkout the tests run in. Files
// of the repository (CRDs, the chart, deploy/) always come from here, never
// from beside $VAULTKMS_BIN_DIR, which may point at another checkout's tools.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isMainModule(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the vaultkms module root above the working directory")
		}
		dir = parent
	}
}

func isMainModule(gomod []byte) bool {
	const want = "module github.com/vaultkms/vaultkms\n"
	return len(gomod) >= len(want) && string(gomod[:len(want)]) == want
}

// Binary returns the path of a tool built by `make tools`, failing with the
// fix when it is missing.
func Binary(env Env, name string) string {
	env.Helper()
	dir, err := BinDir()
	if err != nil {
		env.Fatalf("%v", err)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		env.Fatalf("%s is missing from %s: run `make tools` first", name, dir)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// SocketDir returns a short temporary directory for unix sockets: a socket
// path must stay under 108 bytes, which test temp dirs can exceed.
func SocketDir(env Env) string {
	env.Helper()
	d, err := os.MkdirTemp("", "vk")
	if err != nil {
		env.Fatalf("socket dir: %v", err)
	}
	env.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// process is a child process and a channel closed when it exits.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// stop sends SIGTERM, and SIGKILL if the process has not exited by grace.
func (p *process) stop(grace time.Duration) {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// startProcess starts a child process that dies with this one and logs to
// logPath.
func startProcess(bin string, args []string, logPath string, extraEnv ...string) (*process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = KillWithParent(&syscall.SysProcAttr{Setpgid: true})
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}
