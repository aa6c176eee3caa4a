//go:build !linux

package harness

import "syscall"

// KillWithParent leaves a unchanged: outside Linux there is no Pdeathsig,
// and the tests' cleanups stop the children they start.
func KillWithParent(a *syscall.SysProcAttr) *syscall.SysProcAttr { return a }
