// Command vaultkms-plugin is a Kubernetes KMS v2 plugin that wraps
// kube-apiserver's DEK seeds with a HashiCorp Vault Transit key.
//
// Every flag can also be set as VAULTKMS_<FLAG>, the flag's name in
// capitals with dashes as underscores; a flag on the command line wins.
// No VAULT_* variable is read: the configuration is the flags and their
// VAULTKMS_* names only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vaultkms/vaultkms/internal/logging"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/kmsplugin"
)

type options struct {
	listen, socketMode, socketGroup    string
	vaultAddr, vaultCACert, vaultNS    string
	vaultTimeout                       time.Duration
	transitMount, transitKey           string
	authMethod, authMount, authRole    string
	tokenFile                          string
	approleRoleIDFile, approleSecretID string
	clientCert, clientKey              string
	jwtFile                            string
	healthAddr                         string
	associatedData                     string
	keyRefresh                         time.Duration
	drain                              time.Duration
	maxInFlight                        int
	logFormat, logLevel                string
	version                            bool
}

// newFlagSet defines the plugin's flags, bound to o; docs/plugin.md's
// table under "#### Flags" documents each (TestFlagsDocumented).
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("vaultkms-plugin", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", "unix:///run/vaultkms/kms.sock", "unix socket the KMS v2 API is served on")
	fs.StringVar(&o.socketMode, "socket-mode", "0600", "permissions of the socket file (octal)")
	fs.StringVar(&o.socketGroup, "socket-group", "", "group (name or numeric id) given to the socket file; empty keeps the process's group")
	fs.StringVar(&o.vaultAddr, "vault-addr", "", "Vault address, or several separated by commas, tried in order (https://, or http:// only to loopback)")
	fs.StringVar(&o.vaultCACert, "vault-ca-cert", "", "PEM file with the CA of Vault's serving certificate; re-read when it changes (default: system roots)")
	fs.StringVar(&o.vaultNS, "vault-namespace", "", "Vault Enterprise namespace")
	fs.DurationVar(&o.vaultTimeout, "vault-timeout", 5*time.Second, "longest a single Vault request may take")
	fs.StringVar(&o.transitMount, "transit-mount", "transit", "mount path of the Transit secrets engine")
	fs.StringVar(&o.transitKey, "transit-key", "", "name of the Transit key that wraps DEK seeds (required)")
	fs.StringVar(&o.authMethod, "auth-method", "token", "Vault auth method: token, approle, cert, jwt or kubernetes")
	fs.StringVar(&o.authMount, "auth-mount", "", "mount path of the auth method (default: the method's name)")
	fs.StringVar(&o.authRole, "auth-role", "", "role to log in as (approle: unused; cert: optional certificate role; jwt, kubernetes: required)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding a Vault token (auth-method token); re-read when it changes")
	fs.StringVar(&o.approleRoleIDFile, "approle-role-id-file", "", "file holding the AppRole role ID")
	fs.StringVar(&o.approleSecretID, "approle-secret-id-file", "", "file holding the AppRole secret ID")
	fs.StringVar(&o.clientCert, "client-cert", "", "PEM client certificate presented to Vault (auth-method cert); re-read when it changes")
	fs.StringVar(&o.clientKey, "client-key", "", "PEM key of --client-cert")
	fs.StringVar(&o.jwtFile, "jwt-file", "", "file holding the JWT (auth-method jwt; kubernetes defaults to the pod's service account token)")
	fs.StringVar(&o.healthAddr, "health-addr", "127.0.0.1:8787", "address serving /healthz, /readyz and /metrics; empty disables it")
	fs.StringVar(&o.associatedData, "associated-data", "", "bind every wrapped seed to this cluster identity with Transit associated data (needs an AEAD key type)")
	fs.DurationVar(&o.keyRefresh, "key-refresh-interval", 10*time.Second, "how often the Transit key is re-read; bounds how long a rotation takes to show")
	fs.IntVar(&o.maxInFlight, "max-inflight", 2, "concurrent Transit requests per operation; calls arriving meanwhile are coalesced into the next batch")
	fs.DurationVar(&o.drain, "shutdown-grace", 10*time.Second, "on SIGTERM, how long in-flight calls may take to finish")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

func parseFlags(args []string, getenv func(string) string) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := applyEnv(fs, getenv); err != nil {
		return nil, err
	}
	return o, nil
}

// applyEnv sets every flag not given on the command line from its
// VAULTKMS_ environment variable.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := "VAULTKMS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", name, serr)
			}
		}
	})
	return err
}

func (o *options) authMethodFor() (vault.Method, error) {
	return vault.MethodConfig{Method: o.authMethod, Mount: o.authMount, Role: o.authRole, TokenFile: o.tokenFile,
		RoleIDFile: o.approleRoleIDFile, SecretIDFile: o.approleSecretID, ClientCert: o.clientCert, ClientKey: o.clientKey, JWTFile: o.jwtFile}.Build()
}

// dropVaultEnvironment removes every VAULT_* variable from the process's
// environment. vaultkms never uses them, but the api package parses them
// (and fails on a malformed one) whenever a client is created or cloned.
func dropVaultEnvironment() {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "VAULT_") {
			os.Unsetenv(name)
		}
	}
}

func lookupGroup(g string) (int, error) {
	if g == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(g); err == nil {
		return n, nil
	}
	gid, err := groupID(g)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: %w", g, err)
	}
	return gid, nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vaultkms-plugin:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := parseFlags(args, os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.version {
		fmt.Println("vaultkms-plugin", kmsplugin.Version)
		return nil
	}
	log, err := logging.New(os.Stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	logging.RouteKlog(log)
	// net/http logs an unasked answer's first bytes through the standard
	// logger; those may be key material.
	stdlog.SetOutput(vault.StdLogFilter(os.Stderr))
	dropVaultEnvironment()
	if o.transitKey == "" {
		return errors.New("--transit-key is required: name the Transit key that wraps DEK seeds")
	}
	if err := o.checkDurations(); err != nil {
		return err
	}
	path, err := kmsplugin.SocketPath(o.listen)
	if err != nil {
		return err
	}
	mode, err := strconv.ParseUint(o.socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return fmt.Errorf("--socket-mode %q: give octal permissions such as 0600", o.socketMode)
	}
	if mode&^0o660 != 0 {
		return fmt.Errorf("--socket-mode %q is wider than 0660: only the owner and the socket's group may reach the plugin", o.socketMode)
	}
	gid, err := lookupGroup(o.socketGroup)
	if err != nil {
		return err
	}
	method, err := o.authMethodFor()
	if err != nil {
		return err
	}
	vcfg := vault.Config{Address: o.vaultAddr, CACert: o.vaultCACert, Namespace: o.vaultNS, Timeout: o.vaultTimeout}
	if o.authMethod == "cert" {
		vcfg.ClientCert, vcfg.ClientKey = o.clientCert, o.clientKey
	}
	client, err := vault.NewClient(vcfg)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Listen before anything else, so a second instance fails at once and
	// kube-apiserver finds the socket as soon as possible.
	lis, err := kmsplugin.ListenUnix(path, os.FileMode(mode), gid)
	if err != nil {
		return err
	}
	// The listener removes the socket on close, and only if the file is
	// still the one it created.

	session := vault.NewSession(client, method, log)
	reg := kmsplugin.NewRegistry()
	kmsplugin.RegisterVaultCounters(reg, session, func() uint64 { return vault.Failovers(client) })
	p := kmsplugin.New(kmsplugin.Config{
		Namespace: o.vaultNS, Mount: o.transitMount, Key: o.transitKey,
		AssociatedData:  []byte(o.associatedData),
		RefreshInterval: o.keyRefresh,
		CallTimeout:     o.vaultTimeout,
		MaxInFlight:     o.maxInFlight,
	}, kmsplugin.NewTransit(client, o.transitMount, o.transitKey, []byte(o.associatedData)), session, kmsplugin.NewMetrics(reg), nil, log)

	bg, cancelBG := context.WithCancel(context.Background())
	defer cancelBG()
	go session.Run(bg)
	go func() {
		// The refresher needs a token; until the first login it would
		// only record failures.
		if session.WaitReady(bg) == nil {
			p.Run(bg)
		}
	}()

	if o.healthAddr != "" {
		hl, err := net.Listen("tcp", o.healthAddr)
		if err != nil {
			return fmt.Errorf("--health-addr %q: %w", o.healthAddr, err)
		}
		hs := &http.Server{Handler: kmsplugin.HealthHandler(p, reg), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(hl)
		defer hs.Close()
	}

	log.Info("serving KMS v2", "socket", path, "vault", o.vaultAddr, "transit", o.transitMount+"/"+o.transitKey, "auth", o.authMethod, "version", kmsplugin.Version)
	err = kmsplugin.Serve(ctx, lis, p, o.drain)
	log.Info("stopped", "socket", path)
	return err
}

// checkDurations refuses durations that would take a protection away:
// a Vault timeout of zero is no timeout at all (a load balancer that
// accepts and never answers would hold every call and login forever).
func (o *options) checkDurations() error {
	if o.vaultTimeout <= 0 {
		return fmt.Errorf("--vault-timeout %s: give a positive duration such as 2s (below the EncryptionConfiguration's timeout)", o.vaultTimeout)
	}
	if o.keyRefresh <= 0 {
		return fmt.Errorf("--key-refresh-interval %s: give a positive duration such as 10s", o.keyRefresh)
	}
	return nil
}
