// Command vaultkms-controller runs vaultkms's in-cluster controllers: the
// VaultSecret syncer (short-lived Secrets from Vault, read under each
// tenant's own identity). It holds no etcd credentials: the encryption
// scanner is vaultkms-auditor, a separate component.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	stdlog "log"
	"os"
	"runtime/debug"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/logging"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/internal/version"
	"github.com/vaultkms/vaultkms/syncer"
)

type options struct {
	metricsAddr, probeAddr string
	leaderElect            bool

	vaultAddr, vaultCACert, vaultNamespace string

	namespace, hmacSecret string
	syncer                bool

	workers, expiryWorkers int
	pprofAddr              string
	kubeCompression        bool
	vaultTimeout           time.Duration
	finalizerTimeout       time.Duration
	restartMinInterval     time.Duration
	tokenAudience          string
	allowedAudiences       string
	serviceAccount         string
	namespaceSelector      string
}

// gcPercent is the controller's GOGC unless the environment sets one.
// Nearly all of its heap is the informer cache, which lives as long as
// the process, while a pass leaves little garbage: Go's default (collect
// once the heap has doubled) would hold a second cache's worth of
// garbage, tens of MiB at 10,000 VaultSecrets. Collecting at half again
// costs a few percent of one core during a mass sync (docs/benchmark.md).
const gcPercent = 50

// setGCPercent applies gcPercent unless GOGC is set (the runtime has
// applied that one already).
func setGCPercent(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func main() {
	setGCPercent(os.Getenv)
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vaultkms-controller:", err)
		os.Exit(1)
	}
}

// bindFlags defines the controller's flags on fs; docs/controller.md's
// table under "## Flags" documents each (TestFlagsDocumented).
func bindFlags(fs *flag.FlagSet, o *options, getenv func(string) string) (printVersion *bool, zopts *zap.Options) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the metrics endpoint")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so only one replica works at a time")
	fs.StringVar(&o.vaultAddr, "vault-addr", "", "Vault address, https:// (plain http:// only to a loopback address); VAULT_* variables are ignored")
	fs.StringVar(&o.vaultCACert, "vault-ca-cert", "", "CA of Vault's serving certificate")
	fs.StringVar(&o.vaultNamespace, "vault-namespace", "", "Vault namespace")
	fs.StringVar(&o.namespace, "namespace", envOr(getenv, "POD_NAMESPACE", "vaultkms-system"), "the controller's own namespace (holds its HMAC key)")
	fs.StringVar(&o.hmacSecret, "hmac-key-secret", "vaultkms-hmac-key", "Secret in --namespace holding the key for status data HMACs; created if missing")
	fs.BoolVar(&o.syncer, "enable-vaultsecrets", true, "run the VaultSecret syncer")
	printVersion = fs.Bool("version", false, "print the version and exit")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "", "serve Go's pprof profiles on this address (off when empty); for profiling, never exposed by the chart")
	fs.BoolVar(&o.kubeCompression, "kube-api-compression", false, "ask the API server to gzip its answers and watch streams; off by default, since in the cluster the bytes cost less than the API server's CPU to compress them")
	fs.IntVar(&o.workers, "max-concurrent-reconciles", 8, "VaultSecrets reconciled at once (at least 1)")
	fs.IntVar(&o.expiryWorkers, "expiry-workers", 4, "expired Secrets deleted at once; this path never calls Vault")
	fs.DurationVar(&o.vaultTimeout, "vault-request-timeout", 10*time.Second, "deadline of every Vault request made for a VaultSecret")
	fs.DurationVar(&o.restartMinInterval, "restart-min-interval", syncer.DefaultRestartMinInterval, "least time between two rollout restarts of one workload, however many of its VaultSecrets get new data (a restart asked for within it happens at its end; 0 turns debouncing off)")
	fs.DurationVar(&o.finalizerTimeout, "finalizer-timeout", syncer.DefaultFinalizerTimeout, "how long deleting a VaultSecret waits for an unreachable Vault to revoke its leases before leaving them to end on their own (event and metric LeaseNotRevoked)")
	fs.StringVar(&o.tokenAudience, "token-audience", "vault", "audience of the service account tokens used to log in to Vault when a VaultSecret names none; set the Vault role's audience to match")
	fs.StringVar(&o.allowedAudiences, "allowed-audiences", "", "comma-separated audiences a VaultSecret may name in spec.auth.kubernetes.audiences (default: only --token-audience); no token is minted for any other")
	fs.StringVar(&o.serviceAccount, "service-account-name", envOr(getenv, "POD_SERVICE_ACCOUNT", "vaultkms-controller"), "the controller's own service account, which no VaultSecret may use")
	fs.StringVar(&o.namespaceSelector, "namespace-selector", "", "label selector of the namespaces whose VaultSecrets are served (default all); needs list/watch on namespaces")
	zopts = &zap.Options{}
	zopts.BindFlags(fs)
	return printVersion, zopts
}

func run() error {
	// net/http logs the first bytes of an answer nobody asked for through
	// the standard logger; from Vault those may be a tenant's secret.
	// Routed first, so no path of the process logs them.
	stdlog.SetOutput(vault.StdLogFilter(os.Stderr))
	var o options
	printVersion, zopts := bindFlags(flag.CommandLine, &o, os.Getenv)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("vaultkms-controller"))
		return nil
	}
	// Lazy: the pairs controller-runtime adds to every pass's logger are
	// encoded only when that pass writes a line.
	ctrl.SetLogger(logging.Lazy(zap.New(zap.UseFlagOptions(zopts))))

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
	// kube-apiserver gzips every watch stream of a client that accepts
	// gzip, flushing (and compressing) each event on its own: with 1,000
	// VaultSecrets synced at once that was about 2 % of the API server's
	// CPU and 4 % of the controller's, spent to save bytes on a network
	// inside the cluster.
	cfg.DisableCompression = !o.kubeCompression
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		// Only Secrets carrying the managed-by label are cached, so memory
		// does not grow with the cluster's other Secrets; and only those a
		// VaultSecret controls keep their data there, since anyone can set
		// the label (see secretCacheTransform).
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: {
					Label:     labels.SelectorFromSet(labels.Set{syncer.ManagedByLabel: syncer.ManagedByValue}),
					Transform: secretCacheTransform,
				},
				&v1alpha1.VaultSecret{}: {Transform: vaultSecretCacheTransform},
			},
			// managedFields are never read here. Without them the cache
			// is smaller, and the updates built from cached objects carry
			// none, which the API server reads as "unchanged" instead of
			// decoding and comparing them on every write.
			DefaultTransform: cache.TransformStripManagedFields(),
		},
		Metrics:                metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress: o.probeAddr,
		PprofBindAddress:       o.pprofAddr,
		LeaderElection:         o.leaderElect,
		LeaderElectionID:       "vaultkms-controller.secrets.vaultkms.io",
		// The Lease lives in the controller's own namespace, which also
		// lets it run outside a pod (no in-cluster namespace file there).
		LeaderElectionNamespace: o.namespace,
		// A replica told to stop (a pod deleted, drained or rolled)
		// gives the Lease up once its work has stopped, so the other
		// takes over within its retry period instead of waiting out the
		// Lease. Safe because run returns, and the process exits, as soon
		// as the manager does.
		LeaderElectionReleaseOnCancel: true,
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

	if o.syncer {
		if err := setupSyncer(o, mgr); err != nil {
			return err
		}
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

func setupSyncer(o options, mgr ctrl.Manager) error {
	if o.workers < 1 || o.expiryWorkers < 1 {
		return fmt.Errorf("--max-concurrent-reconciles and --expiry-workers must be at least 1")
	}
	if o.vaultTimeout <= 0 {
		return fmt.Errorf("--vault-request-timeout must be positive, such as 10s")
	}
	allowed, err := audienceAllowlist(o.tokenAudience, o.allowedAudiences)
	if err != nil {
		return err
	}
	var nsSel labels.Selector
	if o.namespaceSelector != "" {
		sel, err := labels.Parse(o.namespaceSelector)
		if err != nil {
			return fmt.Errorf("--namespace-selector: %w", err)
		}
		nsSel = sel
	}
	base, err := vault.NewClient(vault.Config{Address: o.vaultAddr, CACert: o.vaultCACert, Namespace: o.vaultNamespace, Timeout: o.vaultTimeout})
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	key, err := hmacKey(context.Background(), kube, o.namespace, o.hmacSecret)
	if err != nil {
		return err
	}
	m := syncer.NewMetrics(metrics.Registry)
	// What is true of the VaultSecrets now (not Ready, time left), read
	// from the manager's cache at each scrape.
	syncer.RegisterCacheCollectors(metrics.Registry, mgr.GetClient(), clock.RealClock{}, mgr.GetLogger().WithName("metrics"))
	writes, err := syncer.NewMetadataAnswers(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return err
	}
	r := &syncer.Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Writes: writes,
		Tenants: &syncer.Tenants{Base: base, Kube: kube, Clock: clock.RealClock{}, Logins: m.Login,
			Audiences: []string{o.tokenAudience}, AllowedAudiences: allowed, Timeout: o.vaultTimeout},
		Clock:    clock.RealClock{},
		Recorder: mgr.GetEventRecorder("vaultkms-controller"),
		HMACKey:  key,
		Metrics:  m,
		Log:      mgr.GetLogger().WithName("vaultsecret"),

		Workers: o.workers, VaultTimeout: o.vaultTimeout, FinalizerTimeout: o.finalizerTimeout, RestartMinInterval: o.restartMinInterval,
		ControllerNamespace: o.namespace, ControllerServiceAccount: o.serviceAccount,
		NamespaceSelector: nsSel,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	e := &syncer.Expirer{Client: mgr.GetClient(), Clock: clock.RealClock{}, Recorder: mgr.GetEventRecorder("vaultkms-controller"),
		Log: mgr.GetLogger().WithName("expiry"), Metrics: m, Workers: o.expiryWorkers, NamespaceSelector: nsSel}
	return e.SetupWithManager(mgr)
}

// hmacKey reads the key for status HMACs, creating it on first start. It is
// kept in a Secret so HMACs stay comparable across restarts. A key Secret
// that exists but holds no usable key is an error to fix, never replaced:
// replacing it would race with other replicas.
func hmacKey(ctx context.Context, kube kubernetes.Interface, ns, name string) ([]byte, error) {
	// Two rounds: a replica that loses the race to create the key reads
	// the winner's.
	for range 2 {
		s, err := kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if len(s.Data["key"]) < 32 {
				return nil, fmt.Errorf("HMAC key Secret %s/%s: key %q holds %d bytes, need at least 32; delete the Secret and the controller creates a new key", ns, name, "key", len(s.Data["key"]))
			}
			return s.Data["key"], nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read HMAC key Secret %s/%s: %w", ns, name, err)
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		_, err = kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Data:       map[string][]byte{"key": key},
		}, metav1.CreateOptions{})
		if err == nil {
			return key, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create HMAC key Secret %s/%s: %w", ns, name, err)
		}
	}
	return nil, fmt.Errorf("HMAC key Secret %s/%s: created and deleted concurrently; start again", ns, name)
}

// audienceAllowlist parses --allowed-audiences; empty allows only the
// default audience.
func audienceAllowlist(tokenAudience, flagValue string) ([]string, error) {
	if tokenAudience == "" {
		return nil, fmt.Errorf("--token-audience must not be empty; set the audience the Vault roles expect, such as vault")
	}
	if strings.TrimSpace(flagValue) == "" {
		return []string{tokenAudience}, nil
	}
	var out []string
	for _, a := range strings.Split(flagValue, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("--allowed-audiences %q has an empty entry; list audiences separated by commas, such as vault,vault-eu", flagValue)
		}
		out = append(out, a)
	}
	return out, nil
}

func envOr(getenv func(string) string, k, d string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return d
}
