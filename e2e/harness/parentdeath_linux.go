package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// withParentDeath returns a command that runs bin so that the kernel kills
// it when the test process dies: envtest starts etcd and kube-apiserver
// itself, with no way to set Pdeathsig, and a test binary killed by its
// timeout (or by hand) runs no cleanup. Left running, they hold ports,
// temp dirs and whatever file descriptors they inherited, such as a lock
// the test run was started under. Without setpriv (util-linux), bin as it
// is.
func withParentDeath(env Env, bin string) string {
	env.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return bin
	}
	p := filepath.Join(env.TempDir(), filepath.Base(bin)+"-with-parent")
	script := "#!/bin/sh\nexec " + shellQuote(setpriv) + " --pdeathsig KILL " + shellQuote(bin) + ` "$@"` + "\n"
	if err := os.WriteFile(p, []byte(script), 0o700); err != nil {
		env.Fatalf("write %s: %v", p, err)
	}
	return p
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
