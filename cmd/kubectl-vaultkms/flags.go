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

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/apiservers"
	"github.com/vaultkms/vaultkms/verifier/encconfig"
	"github.com/vaultkms/vaultkms/verifier/etcdconn"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/scan"
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

	etcd             etcdconn.Flags
	resources        string
	encryptionConfig string
	provider         string
	allowNoEvidence  bool
	wholePrefix      bool

	kmsSocket, currentKeyID                string
	vaultAddr, vaultCACert, vaultNamespace string
	transitMount, transitKey               string
	vaultTokenFile                         string
	metricsFrom                            []string
	noAPIServerMetrics                     bool
}

func newCommon(name string, ios streams) *common {
	c := &common{fs: pflag.NewFlagSet(name, pflag.ContinueOnError), ios: ios}
	fs := c.fs
	fs.SetOutput(ios.ErrOut)
	c.rules, c.overrides = bindKubeconfigFlags(fs)
	fs.StringVarP(&c.output, "output", "o", "table", "output format: table, json or yaml")
	c.etcd.Bind(fs)
	fs.StringVar(&c.resources, "resources", "", "resources to scan: secrets, configmaps, deployments.apps, <plural>.<group>, comma separated (default: those --encryption-config encrypts, else secrets)")
	fs.StringVar(&c.encryptionConfig, "encryption-config", "", "kube-apiserver's EncryptionConfiguration file: the resources to scan and the provider order to check")
	fs.StringVar(&c.provider, "provider", "vault", "name of the KMS v2 provider in the EncryptionConfiguration")
	fs.BoolVar(&c.allowNoEvidence, "allow-no-evidence", false, "accept a scan that finds nothing as proof (normally it proves nothing: wrong prefix or wrong etcd)")
	fs.StringVar(&c.kmsSocket, "kms-socket", "", "the plugin's socket (a path or unix:///path); its Status gives the current key_id")
	fs.StringVar(&c.currentKeyID, "current-key-id", "", "take this key_id as current instead of asking the plugin or Vault")
	fs.StringVar(&c.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address (default $VAULT_ADDR)")
	fs.StringVar(&c.vaultCACert, "vault-ca-cert", os.Getenv("VAULT_CACERT"), "CA of Vault's serving certificate (default $VAULT_CACERT)")
	fs.StringVar(&c.vaultNamespace, "vault-namespace", os.Getenv("VAULT_NAMESPACE"), "Vault namespace")
	fs.StringVar(&c.transitMount, "transit-mount", "transit", "Transit mount path")
	fs.StringVar(&c.transitKey, "transit-key", "", "Transit key the plugin uses")
	fs.StringVar(&c.vaultTokenFile, "vault-token-file", "", "file with your Vault token (default $VAULT_TOKEN, then ~/.vault-token)")
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
	// One spelling of the mount for Vault paths, messages and key_ids:
	// "transit/" would otherwise build "transit//keys/...".
	c.transitMount = transitkey.NormalizeMount(c.transitMount)
	if c.kmsSocket != "" {
		if _, err := keysource.SocketPath(c.kmsSocket); err != nil {
			return usageErr("%v", err)
		}
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
	if c.transitKey == "" {
		return nil, usageErr("--transit-key is required to ask Vault")
	}
	vc, err := vault.NewClient(vault.Config{Address: c.vaultAddr, CACert: c.vaultCACert, Namespace: c.vaultNamespace, Timeout: 15 * time.Second})
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
	if c.vaultTokenFile != "" {
		b, err := os.ReadFile(c.vaultTokenFile)
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
	if c.currentKeyID != "" {
		return c.currentKeyID, "flag", nil, nil
	}
	if c.transitKey != "" && c.vaultAddr != "" {
		vc, err := c.vaultClient()
		if err != nil {
			return "", "", nil, err
		}
		k, err := keysource.FromVault(ctx, vc, c.vaultNamespace, c.transitMount, c.transitKey)
		if err != nil {
			return "", "", nil, err
		}
		tk = &k
		keyID, source = k.Current.String(), "vault"
	}
	if c.kmsSocket != "" {
		id, health, err := keysource.FromPlugin(ctx, c.kmsSocket)
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

// resourceNames returns what to scan: --resources, else what
// --encryption-config encrypts with the provider, else secrets. The second
// result names configured resources that cannot be scanned by name
// (wildcards).
func (c *common) resourceNames() ([]scan.Resource, []string, error) {
	if c.resources != "" {
		res, err := scan.ParseResources(c.resources)
		if err != nil {
			return nil, nil, usageErr("%v", err)
		}
		return res, nil, nil
	}
	if c.encryptionConfig != "" {
		names, wild, err := encconfig.Encrypted(c.encryptionConfig, c.provider)
		if err != nil {
			return nil, nil, err
		}
		var res []scan.Resource
		for _, n := range names {
			res = append(res, scan.Resource(n))
		}
		if len(res) == 0 {
			return nil, wild, fmt.Errorf("--encryption-config %s lists no resource by name under provider %q; name them with --resources", c.encryptionConfig, c.provider)
		}
		return res, wild, nil
	}
	return []scan.Resource{"secrets"}, nil, nil
}
