// Command vaultkms-controller runs vaultkms's in-cluster controllers. Today
// that is the encryption publisher: given etcd client flags, it scans etcd
// read-only on a schedule and publishes the result as the cluster-scoped
// EncryptionStatus "cluster".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/publisher"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

type options struct {
	metricsAddr, probeAddr string
	leaderElect            bool

	vaultAddr, vaultCACert, vaultNamespace string

	etcdEndpoints                 string
	etcdCACert, etcdCert, etcdKey string
	etcdPrefix, resources         string
	provider                      string
	scanInterval                  time.Duration
	kmsSocket, currentKeyID       string
	transitMount, transitKey      string
	vaultTokenFile                string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vaultkms-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the metrics endpoint")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so only one replica works at a time")
	flag.StringVar(&o.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address (default $VAULT_ADDR)")
	flag.StringVar(&o.vaultCACert, "vault-ca-cert", os.Getenv("VAULT_CACERT"), "CA of Vault's serving certificate")
	flag.StringVar(&o.vaultNamespace, "vault-namespace", os.Getenv("VAULT_NAMESPACE"), "Vault namespace")
	flag.StringVar(&o.etcdEndpoints, "etcd-endpoints", "", "etcd client URLs; when set, the controller scans etcd and publishes EncryptionStatus")
	flag.StringVar(&o.etcdCACert, "etcd-cacert", "", "CA of etcd's serving certificate")
	flag.StringVar(&o.etcdCert, "etcd-cert", "", "client certificate for etcd (read-only access is enough)")
	flag.StringVar(&o.etcdKey, "etcd-key", "", "key of --etcd-cert")
	flag.StringVar(&o.etcdPrefix, "etcd-prefix", "/registry", "kube-apiserver's --etcd-prefix")
	flag.StringVar(&o.resources, "resources", "secrets", "resources to scan, comma separated")
	flag.StringVar(&o.provider, "provider", "vault", "KMS v2 provider name in the EncryptionConfiguration")
	flag.DurationVar(&o.scanInterval, "scan-interval", 10*time.Minute, "time between scans")
	flag.StringVar(&o.kmsSocket, "kms-socket", "", "the plugin's socket, for the current key_id")
	flag.StringVar(&o.currentKeyID, "current-key-id", "", "a fixed current key_id (instead of --kms-socket or Vault)")
	flag.StringVar(&o.transitMount, "transit-mount", "transit", "Transit mount, for the current key_id from Vault")
	flag.StringVar(&o.transitKey, "transit-key", "", "Transit key, for the current key_id from Vault")
	flag.StringVar(&o.vaultTokenFile, "vault-token-file", "", "token able to read the Transit key, for the current key_id from Vault")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	log := ctrl.Log.WithName("vaultkms-controller")

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress: o.probeAddr,
		LeaderElection:         o.leaderElect,
		LeaderElectionID:       "vaultkms-controller.secrets.vaultkms.io",
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	if o.etcdEndpoints != "" {
		p, closeFn, err := newPublisher(o, mgr)
		if err != nil {
			return err
		}
		defer closeFn()
		if err := mgr.Add(p); err != nil {
			return err
		}
		log.Info("publishing EncryptionStatus", "interval", o.scanInterval, "resources", o.resources)
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

func newPublisher(o options, mgr ctrl.Manager) (*publisher.Publisher, func(), error) {
	res, err := scan.ParseResources(o.resources)
	if err != nil {
		return nil, nil, err
	}
	ecfg := clientv3.Config{Endpoints: splitComma(o.etcdEndpoints), DialTimeout: 10 * time.Second}
	if o.etcdCACert != "" || o.etcdCert != "" {
		tc, err := transport.TLSInfo{TrustedCAFile: o.etcdCACert, CertFile: o.etcdCert, KeyFile: o.etcdKey}.ClientConfig()
		if err != nil {
			return nil, nil, fmt.Errorf("etcd TLS: %w", err)
		}
		ecfg.TLS = tc
	}
	etcd, err := clientv3.New(ecfg)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	key, err := keySource(o)
	if err != nil {
		etcd.Close()
		return nil, nil, err
	}
	return &publisher.Publisher{
		Client:   mgr.GetClient(),
		KV:       etcd,
		Options:  scan.Options{Prefix: o.etcdPrefix, Resources: res, Provider: o.provider},
		Key:      key,
		Interval: o.scanInterval,
		Recorder: mgr.GetEventRecorder("vaultkms-controller"),
		Log:      mgr.GetLogger().WithName("encryption-publisher"),
		Metrics:  publisher.NewMetrics(metrics.Registry),
	}, func() { etcd.Close() }, nil
}

func keySource(o options) (publisher.KeySource, error) {
	switch {
	case o.currentKeyID != "":
		return func(context.Context) (string, error) { return o.currentKeyID, nil }, nil
	case o.kmsSocket != "":
		return func(ctx context.Context) (string, error) {
			id, _, err := keysource.FromPlugin(ctx, o.kmsSocket)
			return id, err
		}, nil
	case o.transitKey != "":
		c, err := vault.NewClient(vault.Config{Address: o.vaultAddr, CACert: o.vaultCACert, Namespace: o.vaultNamespace, Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		m := vault.TokenFile{Path: o.vaultTokenFile}
		return func(ctx context.Context) (string, error) {
			auth, err := m.Login(ctx, c)
			if err != nil {
				return "", err
			}
			c.SetToken(auth.ClientToken)
			k, err := keysource.FromVault(ctx, c, o.vaultNamespace, o.transitMount, o.transitKey)
			return k.Current.String(), err
		}, nil
	}
	return nil, errors.New("--etcd-endpoints needs the current key_id: give --kms-socket, --transit-key with --vault-token-file, or --current-key-id")
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
