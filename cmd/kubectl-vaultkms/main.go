// Command kubectl-vaultkms is the operator's view of encryption at rest:
// which objects etcd holds under which Vault key version, where a rotation
// stands, and the tools to finish one. Installed on PATH it runs as
// `kubectl vaultkms`.
//
// Exit codes: 0 success; 1 an error; 2 bad usage; 3 verify found what
// --fail-on names (stale or plaintext objects); 4 trim refused.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/vaultkms/vaultkms/internal/version"
)

const (
	exitError   = 1
	exitUsage   = 2
	exitFinding = 3
	exitRefused = 4
)

// exitErr carries an exit code with its message.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitErr{code: exitUsage, err: fmt.Errorf(format, args...)}
}

var commands = []struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}{
	{"verify", "scan etcd and count objects per provider and key_id; non-zero exit when anything is stale", runVerify},
	{"status", "are we encrypted, and where is the rotation? one screen, with the next action", runStatus},
	{"reencrypt", "rewrite every stale object through the API server under the current key", runReencrypt},
	{"rotate", "rotate the Transit key with your own Vault token", runRotate},
	{"trim", "retire Transit key versions nothing in etcd needs any more", runTrim},
}

func usage() {
	fmt.Fprintf(os.Stderr, "kubectl vaultkms: encryption at rest with Vault Transit, verified\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun `kubectl vaultkms <command> --help` for its flags.\n")
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Println(version.String("kubectl-vaultkms"))
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:])
		if err == nil {
			return 0
		}
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		var ee *exitErr
		if errors.As(err, &ee) {
			if ee.code != exitFinding {
				fmt.Fprintln(os.Stderr, "error:", ee.err)
			}
			return ee.code
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		return exitError
	}
	fmt.Fprintf(os.Stderr, "error: unknown command %q\n\n", args[0])
	usage()
	return exitUsage
}
