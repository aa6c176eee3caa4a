// Command kubectl-vaultkms is the operator's view of encryption at rest:
// which objects etcd holds under which Vault key version, where a rotation
// stands, and the tools to finish one. Installed on PATH it runs as
// `kubectl vaultkms`.
//
// Exit codes (docs/rotation.md):
//
//	0  success; for status: nothing to do
//	1  an error (etcd, Vault or the API server could not be read)
//	2  bad usage
//	3  action needed: verify found stale or plaintext objects (--fail-on),
//	   status found a rotation stage that needs the operator, reencrypt
//	   left objects stale
//	4  refused or no evidence: trim or rotate refused; verify or status
//	   scanned nothing, or the prefix holds no namespaces/default; convert
//	   found nothing it could convert
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
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

// streams are where a command reads and writes, injected so the commands
// can be tested.
type streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

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

func refused(format string, args ...any) error {
	return &exitErr{code: exitRefused, err: fmt.Errorf(format, args...)}
}

type command struct {
	name, summary string
	run           func(ctx context.Context, ios streams, args []string) error
}

var commands = []command{
	{"verify", "scan etcd and count objects per provider and key_id; non-zero exit when anything is stale", runVerify},
	{"status", "are we encrypted, and where is the rotation? one screen, with the next action", runStatus},
	{"reencrypt", "rewrite every stale object through the API server under the current key", runReencrypt},
	{"rotate", "rotate the Transit key with your own Vault token", runRotate},
	{"trim", "retire Transit key versions nothing in etcd needs any more", runTrim},
	{"secrets", "list VaultSecrets with the time their Secrets have left", runSecrets},
	{"convert", "turn Vault Secrets Operator or External Secrets Operator manifests into vaultkms ones", runConvert},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "kubectl vaultkms: encryption at rest with Vault Transit, verified\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun `kubectl vaultkms <command> --help` for its flags.\n")
}

func main() {
	// A scan streams pages of about 1 MiB, a few at once; a soft limit on
	// the Go runtime's memory (the binary's own code adds about 25 MiB of
	// RSS on top) keeps garbage from piling up to twice the live size.
	// GOMEMLIMIT still overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(32 << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, ios streams, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(ios.ErrOut)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintln(ios.Out, version.String("kubectl-vaultkms"))
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, ios, args[1:])
		if err == nil {
			return 0
		}
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		var ee *exitErr
		if errors.As(err, &ee) {
			if ee.code != exitFinding {
				fmt.Fprintln(ios.ErrOut, "error:", ee.err)
			}
			return ee.code
		}
		fmt.Fprintln(ios.ErrOut, "error:", err)
		return exitError
	}
	fmt.Fprintf(ios.ErrOut, "error: unknown command %q\n\n", args[0])
	usage(ios.ErrOut)
	return exitUsage
}
