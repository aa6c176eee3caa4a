package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type built struct {
	once sync.Once
	path string
	err  error
}

type buildKey struct {
	pkg  string
	race bool
}

var builds sync.Map // buildKey -> *built

// GoBuild builds a command of this module once per process and returns the
// binary's path.
func GoBuild(env Env, pkg string) string {
	env.Helper()
	return goBuild(env, pkg, false)
}

// goBuild builds pkg, with the race detector when race is set.
func goBuild(env Env, pkg string, race bool) string {
	env.Helper()
	v, _ := builds.LoadOrStore(buildKey{pkg, race}, &built{})
	b := v.(*built)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "vaultkms-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, path.Base(pkg))
		// Built as the Makefile builds what the images ship (static,
		// no symbol table or DWARF), so what the tests and benchmarks
		// measure, memory included, is what users run; the race detector
		// needs cgo.
		args := append(shippedBuild(), "-o", b.path)
		cgo := "CGO_ENABLED=0"
		if race {
			args = append(args, "-race")
			cgo = "CGO_ENABLED=1"
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Env = append(os.Environ(), cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("%v: %s", err, out)
		}
	})
	if b.err != nil {
		env.Fatalf("build %s: %v", pkg, b.err)
	}
	return b.path
}

// Controller is a running vaultkms-controller (or auditor).
type Controller struct {
	Log        *SyncBuffer
	MetricsURL string
	Pid        int
	stop       func()
	// start runs the program again with the same arguments and ports.
	start func()
}

// Stop stops the controller (cleanup does too).
func (c *Controller) Stop() { c.stop() }

// Start runs a stopped controller again with the same arguments, on the
// same metrics and probe ports, so a Prometheus scraping the first process
// scrapes the new one; its log goes on in Log.
func (c *Controller) Start() { c.start() }

// StartController builds and runs cmd/vaultkms-controller with kubeconfig
// and args on free ports; it stops on cleanup. Its log is returned.
func StartController(env Env, kubeconfig string, args ...string) *SyncBuffer {
	env.Helper()
	return RunController(env, kubeconfig, args...).Log
}

// RunController is StartController returning the whole Controller.
func RunController(env Env, kubeconfig string, args ...string) *Controller {
	env.Helper()
	return runManager(env, "vaultkms-controller", kubeconfig, args...)
}

// RunAuditor builds and runs cmd/vaultkms-auditor as RunController runs
// the controller.
func RunAuditor(env Env, kubeconfig string, args ...string) *Controller {
	env.Helper()
	return runManager(env, "vaultkms-auditor", kubeconfig, args...)
}

// runManager runs one of vaultkms's controller-runtime binaries with
// metrics and probes on free loopback ports (args may override them), a
// debug log, and a stop on cleanup.
func runManager(env Env, name, kubeconfig string, args ...string) *Controller {
	env.Helper()
	// Under `go test -race` the controllers run under the race detector
	// too: the tests exercise their concurrency far more than their unit
	// tests do.
	bin := goBuild(env, "github.com/vaultkms/vaultkms/cmd/"+name, raceEnabled)
	m, err := FreePort()
	if err != nil {
		env.Fatalf("%v", err)
	}
	h, err := FreePort()
	if err != nil {
		env.Fatalf("%v", err)
	}
	argv := append([]string{"--kubeconfig=" + kubeconfig, "--zap-log-level=debug",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", m), fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", h)}, args...)
	c := &Controller{Log: &SyncBuffer{}, MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", m)}
	var mu sync.Mutex
	var stopRunning func()
	c.start = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopRunning != nil {
			env.Fatalf("start %s: it is running", name)
		}
		cmd := exec.Command(bin, argv...)
		cmd.Stdout, cmd.Stderr = c.Log, c.Log
		cmd.SysProcAttr = KillWithParent(&syscall.SysProcAttr{})
		if err := cmd.Start(); err != nil {
			env.Fatalf("start %s: %v", name, err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		c.Pid = cmd.Process.Pid
		stopRunning = func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
	}
	c.stop = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopRunning != nil {
			stopRunning()
			stopRunning = nil
		}
	}
	c.start()
	// Registered before stop, so it runs after the process has exited
	// and its detector has reported everything.
	env.Cleanup(func() { failOnDataRace(env, name, c.Log.String()) })
	env.Cleanup(c.stop)
	return c
}

// dataRaceMarker starts every report of Go's race detector.
const dataRaceMarker = "WARNING: DATA RACE"

// failOnDataRace fails the test when a process's log holds a race report.
// Env has no Errorf (commands use it too); tests' *testing.T does.
func failOnDataRace(env Env, name, log string) {
	i := strings.Index(log, dataRaceMarker)
	if i < 0 {
		return
	}
	report := log[i:]
	if len(report) > 8<<10 {
		report = report[:8<<10]
	}
	msg := fmt.Sprintf("%s: the race detector reported a data race:\n%s", name, report)
	if e, ok := env.(interface{ Errorf(string, ...any) }); ok {
		e.Errorf("%s", msg)
		return
	}
	env.Logf("%s", msg)
}
