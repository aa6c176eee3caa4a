//go:build !linux

package harness

// withParentDeath returns bin: outside Linux there is no Pdeathsig, and the
// tests' cleanups stop what they started.
func withParentDeath(env Env, bin string) string { return bin }
