package harness

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A process started through withParentDeath dies with the process that
// started it, even when that one is killed and runs no cleanup.
func TestWithParentDeath(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv (util-linux) on this machine")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	wrapped := withParentDeath(t, sleep)
	// A middle process (sh) starts the wrapped sleep in the background,
	// prints its pid and stays; killing sh with SIGKILL runs no cleanup.
	mid := exec.Command("sh", "-c", wrapped+" 300 & echo $!; wait")
	out, err := mid.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mid.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, err := out.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(buf[:n]))
	// Until setpriv has run, the child has no parent-death signal yet:
	// wait for the wrapped program itself.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			t.Fatalf("wrapped child %s not running: %v", pid, err)
		}
		if strings.HasPrefix(string(cmdline), sleep+"\x00") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %s never ran %s: %q", pid, sleep, cmdline)
		}
	}
	_ = mid.Process.Signal(syscall.SIGKILL)
	_ = mid.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			return // gone (or a zombie awaiting its reaper)
		}
		if time.Now().After(deadline) {
			ps, _ := exec.Command("ps", "-o", "pid,ppid,stat,cmd", "-p", pid).CombinedOutput()
			t.Fatalf("child %s still running 10s after its parent was killed: %s", pid, ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
