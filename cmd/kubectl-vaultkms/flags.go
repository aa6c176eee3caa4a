package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// common holds the flags most commands share.
type common struct {
	fs *pflag.FlagSet

	kubeconfig, context string
	output              string

	etcdEndpoints                 []string
	etcdCACert, etcdCert, etcdKey string
	etcdPrefix                    string
	resources                     string
	provider                      string

	kmsSocket, currentKeyID                string
	vaultAddr, vaultCACert, vaultNamespace string
	transitMount, transitKey               string
	vaultTokenFile                         string
	metricsFrom                            []string
	noAPIServerMetrics                     bool
}

func newCommon(name string) *common {
	c := &common{fs: pflag.NewFlagSet(name, pflag.ContinueOnError)}
	fs := c.fs
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&c.context, "context", "", "kubeconfig context to use")
	fs.StringVarP(&c.output, "output", "o", "table", "output format: table, json or yaml")
	fs.StringSliceVar(&c.etcdEndpoints, "etcd-endpoints", nil, "etcd client URLs, comma separated (read-only access is enough)")
	fs.StringVar(&c.etcdCACert, "etcd-cacert", "", "CA of etcd's serving certificate")
	fs.StringVar(&c.etcdCert, "etcd-cert", "", "client certificate for etcd")
	fs.StringVar(&c.etcdKey, "etcd-key", "", "key of --etcd-cert")
	fs.StringVar(&c.etcdPrefix, "etcd-prefix", "/registry", "kube-apiserver's --etcd-prefix")
	fs.StringVar(&c.resources, "resources", "secrets", "resources to scan: secrets, configmaps, <plural>.<group>, comma separated")
	fs.StringVar(&c.provider, "provider", "vault", "name of the KMS v2 provider in the EncryptionConfiguration")
	fs.StringVar(&c.kmsSocket, "kms-socket", "", "the plugin's socket; its Status gives the current key_id")
	fs.StringVar(&c.currentKeyID, "current-key-id", "", "take this key_id as current instead of asking the plugin or Vault")
	fs.StringVar(&c.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address (default $VAULT_ADDR)")
	fs.StringVar(&c.vaultCACert, "vault-ca-cert", os.Getenv("VAULT_CACERT"), "CA of Vault's serving certificate (default $VAULT_CACERT)")
	fs.StringVar(&c.vaultNamespace, "vault-namespace", os.Getenv("VAULT_NAMESPACE"), "Vault namespace")
	fs.StringVar(&c.transitMount, "transit-mount", "transit", "Transit mount path")
	fs.StringVar(&c.transitKey, "transit-key", "", "Transit key the plugin uses")
	fs.StringVar(&c.vaultTokenFile, "vault-token-file", "", "file with your Vault token (default $VAULT_TOKEN, then ~/.vault-token)")
	fs.StringSliceVar(&c.metricsFrom, "apiserver-metrics-url", nil, "extra API server /metrics URLs to check (each API server behind a load balancer); the kubeconfig's server is always asked")
	fs.BoolVar(&c.noAPIServerMetrics, "no-apiserver-metrics", false, "do not ask API servers which key_id they use")
	return c
}

func (c *common) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	if c.fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", c.fs.Args())
	}
	switch c.output {
	case "table", "json", "yaml":
	default:
		return usageErr("-o %q: use table, json or yaml", c.output)
	}
	return nil
}

func (c *common) etcd() (*clientv3.Client, error) {
	if len(c.etcdEndpoints) == 0 {
		return nil, usageErr("--etcd-endpoints is required: the scan reads etcd directly (read-only)")
	}
	cfg := clientv3.Config{Endpoints: c.etcdEndpoints, DialTimeout: 10 * time.Second}
	if c.etcdCACert != "" || c.etcdCert != "" {
		info := transport.TLSInfo{TrustedCAFile: c.etcdCACert, CertFile: c.etcdCert, KeyFile: c.etcdKey}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tc
	}
	return clientv3.New(cfg)
}

func (c *common) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if c.kubeconfig != "" {
		rules.ExplicitPath = c.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: c.context}).ClientConfig()
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

// currentKey finds the current key_id: from the plugin if --kms-socket is
// given, else from Vault.
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
			fmt.Fprintf(os.Stderr, "warning: the plugin reports %s but Vault's latest version is %s; the plugin re-reads the key every few seconds\n", id, keyID)
		}
		if health != "ok" {
			fmt.Fprintf(os.Stderr, "warning: the plugin is not healthy: %s\n", health)
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

// apiServerKeys reads the key_id hashes the API servers report.
func (c *common) apiServerKeys(ctx context.Context) ([]keysource.APIServerKey, error) {
	if c.noAPIServerMetrics {
		return nil, nil
	}
	cfg, err := c.restConfig()
	if err != nil {
		return nil, err
	}
	var all []keysource.APIServerKey
	rc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	urls := append([]string{strings.TrimSuffix(cfg.Host, "/") + "/metrics"}, c.metricsFrom...)
	seen := map[string]bool{}
	for _, u := range urls {
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		resp, err := rc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("API server metrics %s: %w", u, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return nil, fmt.Errorf("API server metrics %s: HTTP %d %v", u, resp.StatusCode, err)
		}
		keys, err := keysource.FromAPIServerMetrics(strings.NewReader(string(body)))
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			id := k.APIServerIDHash + "/" + k.Provider
			if !seen[id] {
				seen[id] = true
				all = append(all, k)
			}
		}
	}
	return all, nil
}

func (c *common) scanOptions() (scan.Options, error) {
	res, err := scan.ParseResources(c.resources)
	if err != nil {
		return scan.Options{}, usageErr("%v", err)
	}
	return scan.Options{Prefix: c.etcdPrefix, Resources: res, Provider: c.provider}, nil
}
