package harness

import "syscall"

// KillWithParent makes the kernel kill the child when the test process
// dies, so an interrupted test leaves no Vault or API server running. Only
// Linux has it (Pdeathsig); elsewhere the tests' cleanups stop children.
func KillWithParent(a *syscall.SysProcAttr) *syscall.SysProcAttr {
	a.Pdeathsig = syscall.SIGKILL
	return a
}
