package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/apiservers"
	"github.com/vaultkms/vaultkms/verifier/etcdconn"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/scan"
	"github.com/vaultkms/vaultkms/verifier/scope"
)

// common holds the flags most commands share, and the command's streams.
type common struct {
	fs  *pflag.FlagSet
	ios streams

	// Kubeconfig flags follow the kubectl plugin convention: the same
	// names and meaning as kubectl's own (--kubeconfig, --context, -n,
	// --server, --token, ...).
	rules     *clientcmd.ClientConfigLoadingRules
	overrides *clientcmd.ConfigOverrides

	output string

	etcd            etcdconn.Flags
	scope           scope.Flags
	allowNoEvidence bool
	wholePrefix     bool

	key                keysource.Flags
	metricsFrom        []string
	noAPIServerMetrics bool
}

func newCommon(name string, ios streams) *common {
	c := &common{fs: pflag.NewFlagSet(name, pflag.ContinueOnError), ios: ios}
	fs := c.fs
	fs.SetOutput(ios.ErrOut)
	c.rules, c.overrides = bindKubeconfigFlags(fs)
	fs.StringVarP(&c.output, "output", "o", "table", "output format: table, json or yaml")
	c.etcd.Bind(fs)
	c.scope.Bind(fs)
	fs.BoolVar(&c.allowNoEvidence, "allow-no-evidence", false, "accept a scan that finds nothing as proof (normally it proves nothing: wrong prefix or wrong etcd)")
	// The operator's shell: VAULT_* variables are defaults, as for the
	// vault CLI.
	c.key.Bind(fs, os.Getenv, "file with your Vault token (default $VAULT_TOKEN, then ~/.vault-token)")
	fs.StringSliceVar(&c.metricsFrom, "apiserver-metrics-url", nil, "the /metrics URL of every API server; default: found from the kubernetes EndpointSlices")
	fs.BoolVar(&c.noAPIServerMetrics, "no-apiserver-metrics", false, "do not ask API servers which key_id they use (status and verify only; trim never skips this)")
	return c
}

// bindKubeconfigFlags adds kubectl's own connection flags (--kubeconfig,
// --context, -n, --server, --token, ...) to fs.
func bindKubeconfigFlags(fs *pflag.FlagSet) (*clientcmd.ClientConfigLoadingRules, *clientcmd.ConfigOverrides) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	fs.StringVar(&rules.ExplicitPath, clientcmd.RecommendedConfigPathFlag, "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	clientcmd.BindOverrideFlags(overrides, fs, clientcmd.RecommendedConfigOverrideFlags(""))
	return rules, overrides
}

// flagsParsed is called with every command's flags as they are parsed;
// TestFlagsDocumented reads them there.
var flagsParsed = func(*pflag.FlagSet) {}

// parseFlags parses a command's flags: --help is ErrHelp, a wrong flag or
// an argument a usage error.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	flagsParsed(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	return nil
}

func (c *common) parse(args []string) error {
	if err := parseFlags(c.fs, args); err != nil {
		return err
	}
	switch c.output {
	case "table", "json", "yaml":
	default:
		return usageErr("-o %q: use table, json or yaml", c.output)
	}
	if err := c.key.Check(); err != nil {
		return usageErr("%v", err)
	}
	return nil
}

func (c *common) warnf(format string, args ...any) {
	fmt.Fprintf(c.ios.ErrOut, "warning: "+format+"\n", args...)
}

func (c *common) dialEtcd(ctx context.Context) (*etcdconn.Client, error) {
	cfg, err := c.etcd.Config("the scan reads etcd directly (read-only)")
	if errors.Is(err, etcdconn.ErrNoEndpoints) {
		return nil, usageErr("%v", err)
	}
	if err != nil {
		return nil, err
	}
	return etcdconn.Dial(ctx, cfg)
}

func (c *common) restConfig() (*rest.Config, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(c.rules, c.overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// vaultClient builds a client with the operator's own token.
func (c *common) vaultClient() (*api.Client, error) {
	if c.key.TransitKey == "" {
		return nil, usageErr("--transit-key is required to ask Vault")
	}
	if c.key.VaultAddr == "" {
		return nil, usageErr("--vault-addr (or VAULT_ADDR) is required to ask Vault")
	}
	vc, err := vault.NewClient(vault.Config{Address: c.key.VaultAddr, CACert: c.key.VaultCACert, Namespace: c.key.VaultNamespace, Timeout: 15 * time.Second})
	if err != nil {
		return nil, err
	}
	tok, err := c.operatorToken()
	if err != nil {
		return nil, err
	}
	vc.SetToken(tok)
	return vc, nil
}

func (c *common) operatorToken() (string, error) {
	if c.key.VaultTokenFile != "" {
		b, err := os.ReadFile(c.key.VaultTokenFile)
		if err != nil {
			return "", fmt.Errorf("--vault-token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := os.Getenv("VAULT_TOKEN"); t != "" {
		return t, nil
	}
	home, _ := os.UserHomeDir()
	if b, err := os.ReadFile(filepath.Join(home, ".vault-token")); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	return "", usageErr("no Vault token: set --vault-token-file, VAULT_TOKEN or log in with `vault login`")
}

// currentKey finds the current key_id: from Vault if --transit-key and
// --vault-addr are given, else from the plugin.
func (c *common) currentKey(ctx context.Context) (keyID, source string, tk *keysource.TransitKey, err error) {
	if c.key.CurrentKeyID != "" {
		return c.key.CurrentKeyID, "flag", nil, nil
	}
	if c.key.FromVaultWanted() {
		vc, err := c.vaultClient()
		if err != nil {
			return "", "", nil, err
		}
		k, err := keysource.FromVault(ctx, vc, c.key.VaultNamespace, c.key.TransitMount, c.key.TransitKey)
		if err != nil {
			return "", "", nil, err
		}
		tk = &k
		keyID, source = k.Current.String(), "vault"
	}
	if c.key.KMSSocket != "" {
		id, health, err := keysource.FromPlugin(ctx, c.key.KMSSocket)
		if err != nil {
			return "", "", nil, err
		}
		if keyID != "" && id != keyID {
			c.warnf("the plugin reports %s but Vault's latest version is %s; the plugin re-reads the key every few seconds", id, keyID)
		}
		if health != "ok" {
			c.warnf("the plugin is not healthy: %s", health)
		}
		if keyID == "" {
			keyID, source = id, "plugin"
		}
	}
	if keyID == "" {
		return "", "", nil, usageErr("cannot tell the current key_id: give --kms-socket, or --vault-addr with --transit-key")
	}
	return keyID, source, tk, nil
}

// apiServerReports reads every API server's key_id reports: from the
// --apiserver-metrics-url list, else from each endpoint of the kubernetes
// EndpointSlices.
func (c *common) apiServerReports(ctx context.Context) ([]apiservers.Report, error) {
	cfg, err := c.restConfig()
	if err != nil {
		return nil, err
	}
	urls := c.metricsFrom
	if len(urls) == 0 {
		kube, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		if urls, err = apiservers.Discover(ctx, kube); err != nil {
			return nil, err
		}
	}
	return apiservers.Fetch(ctx, cfg, urls)
}

// apiServerKeys flattens the reports to the newest key per API server, for
// status; unreadable API servers are warned about.
func (c *common) apiServerKeys(ctx context.Context) ([]keysource.APIServerKey, error) {
	if c.noAPIServerMetrics {
		return nil, nil
	}
	reports, err := c.apiServerReports(ctx)
	if err != nil {
		return nil, err
	}
	newest := map[[2]string]keysource.APIServerKey{}
	for _, r := range reports {
		if r.Err != "" {
			c.warnf("API server metrics %s: %s", r.URL, r.Err)
		}
		for _, k := range r.Keys {
			id := [2]string{k.APIServerIDHash, k.Provider}
			if cur, ok := newest[id]; !ok || k.LastSeen.After(cur.LastSeen) {
				newest[id] = k
			}
		}
	}
	var out []keysource.APIServerKey
	for _, k := range newest {
		out = append(out, k)
	}
	return out, nil
}

// resourceNames returns what to scan (scope.Flags.Resolve); a wildcard
// of the EncryptionConfiguration is returned for the caller to say it was
// not scanned.
func (c *common) resourceNames() ([]scan.Resource, []string, error) {
	res, wild, err := c.scope.Resolve()
	if err != nil && c.scope.Resources != "" {
		return nil, nil, usageErr("%v", err)
	}
	return res, wild, err
}
