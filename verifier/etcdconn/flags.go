package etcdconn

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// FlagSet is what the standard library's flag.FlagSet and spf13/pflag's
// FlagSet have in common, so the auditor (flag) and kubectl-vaultkms
// (pflag) define the etcd flags in one place and cannot drift apart.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
	DurationVar(p *time.Duration, name string, value time.Duration, usage string)
	Func(name, usage string, fn func(string) error)
}

// ErrNoEndpoints is the error of Config without --etcd-endpoints: a
// usage error, where a password file that cannot be read is not.
var ErrNoEndpoints = errors.New("--etcd-endpoints is required")

// Flags are the command-line flags saying which etcd to read and how.
type Flags struct {
	config       Config
	passwordFile string
	// Prefix is kube-apiserver's --etcd-prefix.
	Prefix string
}

// Bind defines --etcd-endpoints, --etcd-cacert, --etcd-cert, --etcd-key,
// --etcd-user, --etcd-password-file, --etcd-dial-timeout,
// --etcd-request-timeout and --etcd-prefix on fs.
func (f *Flags) Bind(fs FlagSet) {
	// Repeated or comma separated, as kubectl users write lists.
	fs.Func("etcd-endpoints", "etcd client `URLs`, comma separated or repeated (read-only access is enough; required)", func(v string) error {
		for _, ep := range strings.Split(v, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				f.config.Endpoints = append(f.config.Endpoints, ep)
			}
		}
		return nil
	})
	fs.StringVar(&f.config.CACert, "etcd-cacert", "", "CA of etcd's serving certificate")
	fs.StringVar(&f.config.Cert, "etcd-cert", "", "client certificate of a read-only etcd user (not the API server's)")
	fs.StringVar(&f.config.Key, "etcd-key", "", "key of --etcd-cert")
	fs.StringVar(&f.config.Username, "etcd-user", "", "read-only etcd user, when etcd authenticates by password (a role that may only read the prefix is enough)")
	fs.StringVar(&f.passwordFile, "etcd-password-file", "", "file holding the password of --etcd-user")
	fs.DurationVar(&f.config.DialTimeout, "etcd-dial-timeout", 5*time.Second, "time to connect to each etcd endpoint")
	fs.DurationVar(&f.config.RequestTimeout, "etcd-request-timeout", 30*time.Second, "time for each etcd request")
	fs.StringVar(&f.Prefix, "etcd-prefix", "/registry", "kube-apiserver's --etcd-prefix")
}

// Config is the connection the flags describe, with the password read
// from --etcd-password-file. why completes "--etcd-endpoints is required:".
func (f *Flags) Config(why string) (Config, error) {
	cfg := f.config
	cfg.Endpoints = append([]string(nil), f.config.Endpoints...)
	if len(cfg.Endpoints) == 0 {
		return Config{}, fmt.Errorf("%w: %s", ErrNoEndpoints, why)
	}
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return Config{}, fmt.Errorf("--etcd-password-file: %w", err)
		}
		cfg.Password = strings.TrimSpace(string(b))
	}
	return cfg, nil
}
