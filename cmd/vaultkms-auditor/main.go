// Command vaultkms-auditor scans etcd read-only on a schedule and publishes
// the cluster-scoped EncryptionStatus "cluster": how objects are stored and
// where a key rotation stands. It runs on control-plane nodes with a
// read-only etcd identity (docs/rotation.md, "The auditor"); the tenant-facing
// vaultkms-controller holds no etcd credentials at all.
//
// Kubernetes RBAC it needs: encryptionstatuses get/create/update and
// encryptionstatuses/status update (secrets.vaultkms.io), events create/patch
// (events.k8s.io), and with --leader-elect leases get/create/update in its
// namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/logging"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/internal/version"
	"github.com/vaultkms/vaultkms/verifier/autopilot"
	"github.com/vaultkms/vaultkms/verifier/etcdconn"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/publisher"
	"github.com/vaultkms/vaultkms/verifier/scan"
	"github.com/vaultkms/vaultkms/verifier/scope"
)

type options struct {
	metricsAddr, probeAddr string
	leaderElect            bool
	namespace              string

	etcd         etcdconn.Flags
	scope        scope.Flags
	scanInterval time.Duration
	key          keysource.Flags

	rotation                               bool
	rotationVaultAddr, rotationVaultCACert string
	rotationAuth                           vault.MethodConfig
	rotationWorkers                        int
	// testOnlySettle is for the project's e2e tests only (see LiveEnv).
	testOnlySettle time.Duration
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vaultkms-auditor:", err)
		os.Exit(1)
	}
}

// bindFlags defines the auditor's flags on fs; docs/rotation.md's table
// under "### The auditor's flags" documents each (TestFlagsDocumented).
func bindFlags(fs *flag.FlagSet, o *options, getenv func(string) string) (printVersion *bool, zopts *zap.Options) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the metrics endpoint")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so only one replica scans")
	fs.StringVar(&o.namespace, "leader-election-namespace", getenv("POD_NAMESPACE"), "namespace of the leader election Lease")
	o.etcd.Bind(fs)
	o.scope.Bind(fs)
	fs.DurationVar(&o.testOnlySettle, "test-only-settle-time", 0, "for the project's tests only: replaces every RotationPolicy's settle time, below its minimum")
	fs.DurationVar(&o.scanInterval, "scan-interval", 10*time.Minute, fmt.Sprintf("time between scans (at least %s; up to a tenth more is added at random)", publisher.MinInterval))
	// No VAULT_* defaults: a variable left in the pod's environment must
	// not change which Vault the auditor trusts.
	o.key.Bind(fs, nil, "file holding a token allowed only to read the Transit key, for the current key_id from Vault")
	fs.BoolVar(&o.rotation, "rotation", false, "run the RotationPolicy autopilot: rotate, re-encrypt, verify and trim the Transit key a RotationPolicy names (opt-in; needs a rotation identity)")
	fs.StringVar(&o.rotationVaultAddr, "rotation-vault-addr", "", "Vault address for rotation (default: --vault-addr)")
	fs.StringVar(&o.rotationVaultCACert, "rotation-vault-ca-cert", "", "CA of Vault's serving certificate for rotation (default: --vault-ca-cert)")
	o.rotationAuth.FlagPrefix = "rotation-"
	fs.StringVar(&o.rotationAuth.Method, "rotation-auth-method", "token", "auth method of the rotation identity: token, approle, cert, jwt or kubernetes")
	fs.StringVar(&o.rotationAuth.Mount, "rotation-auth-mount", "", "mount path of the rotation identity's auth method (default: the method's name)")
	fs.StringVar(&o.rotationAuth.Role, "rotation-auth-role", "", "role of the rotation identity (jwt, kubernetes: required; cert: optional)")
	fs.StringVar(&o.rotationAuth.TokenFile, "rotation-token-file", "", "file holding the rotation identity's token (auth-method token); not --vault-token-file")
	fs.StringVar(&o.rotationAuth.RoleIDFile, "rotation-approle-role-id-file", "", "file holding the rotation identity's AppRole role ID")
	fs.StringVar(&o.rotationAuth.SecretIDFile, "rotation-approle-secret-id-file", "", "file holding the rotation identity's AppRole secret ID")
	fs.StringVar(&o.rotationAuth.ClientCert, "rotation-client-cert", "", "client certificate of the rotation identity (auth-method cert)")
	fs.StringVar(&o.rotationAuth.ClientKey, "rotation-client-key", "", "key of --rotation-client-cert")
	fs.StringVar(&o.rotationAuth.JWTFile, "rotation-jwt-file", "", "file holding the rotation identity's JWT (jwt; kubernetes defaults to the pod's token)")
	fs.IntVar(&o.rotationWorkers, "rotation-workers", 4, "objects re-encrypted at once (the policy's qps paces them)")
	zopts = &zap.Options{}
	zopts.BindFlags(fs)
	printVersion = fs.Bool("version", false, "print the version and exit")
	return printVersion, zopts
}

func run() error {
	var o options
	printVersion, zopts := bindFlags(flag.CommandLine, &o, os.Getenv)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("vaultkms-auditor"))
		return nil
	}
	// Lazy: the pairs controller-runtime adds to every pass's logger are
	// encoded only when that pass writes a line.
	ctrl.SetLogger(logging.Lazy(zap.New(zap.UseFlagOptions(zopts))))

	if err := publisher.CheckInterval(o.scanInterval); err != nil {
		return err
	}
	etcdConfig, err := o.etcd.Config("the auditor reads etcd (read-only)")
	if err != nil {
		return err
	}
	names, err := resourceNames(o)
	if err != nil {
		return err
	}
	key, err := keySource(o)
	if err != nil {
		return err
	}

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
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionNamespace: o.namespace,
		LeaderElectionID:        "vaultkms-auditor.secrets.vaultkms.io",
		// Given up on a graceful stop, once the scans and the autopilot
		// have stopped; the process exits right after (see the controller).
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
	// A client without a cache: the auditor only gets, creates and
	// updates its one EncryptionStatus, so it needs no list or watch.
	kc, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	// Lazy: an etcd that does not answer yet is a failed scan (metrics,
	// EncryptionStatus, the ScanFailing alert), not an exit that leaves
	// nothing running to say why.
	etcd, err := etcdconn.NewLazy(etcdConfig)
	if err != nil {
		return err
	}
	defer etcd.Close()
	// Custom resources' definitions are looked up by each scan, not here:
	// etcd may not answer yet.
	targets, err := scan.Targets(o.etcd.Prefix, names)
	if err != nil {
		return err
	}
	p := &publisher.Publisher{
		Client:   kc,
		KV:       etcd,
		Options:  scan.Options{Prefix: o.etcd.Prefix, Targets: targets, Provider: o.scope.Provider},
		Key:      key,
		Interval: o.scanInterval,
		Recorder: mgr.GetEventRecorder("vaultkms-auditor"),
		Log:      mgr.GetLogger().WithName("encryption-publisher"),
		Metrics:  publisher.NewMetrics(metrics.Registry),
	}
	if err := mgr.Add(p); err != nil {
		return err
	}
	if o.rotation {
		if err := setupRotation(ctx, mgr, o, etcd, targets, key); err != nil {
			return err
		}
	}
	mgr.GetLogger().Info("publishing EncryptionStatus", "interval", o.scanInterval, "resources", fmt.Sprint(names))
	return mgr.Start(ctx)
}

// setupRotation runs the RotationPolicy autopilot with its own Vault
// identity, separate from the read-only one of --vault-token-file.
func setupRotation(ctx context.Context, mgr ctrl.Manager, o options, etcd scan.KV, targets []scan.Target, key publisher.KeySource) error {
	if o.rotationAuth.Method == "token" && o.rotationAuth.TokenFile != "" && o.rotationAuth.TokenFile == o.key.VaultTokenFile {
		return errors.New("--rotation-token-file must not be --vault-token-file: rotation uses its own identity, allowed to rotate and trim one key, apart from the read-only one")
	}
	if o.rotationWorkers <= 0 {
		return errors.New("--rotation-workers must be positive")
	}
	method, err := o.rotationAuth.Build()
	if err != nil {
		return err
	}
	addr, ca := o.rotationVaultAddr, o.rotationVaultCACert
	if addr == "" {
		addr = o.key.VaultAddr
	}
	if ca == "" {
		ca = o.key.VaultCACert
	}
	if addr == "" {
		return errors.New("--rotation needs --rotation-vault-addr (or --vault-addr)")
	}
	vcfg := vault.Config{Address: addr, CACert: ca, Namespace: o.key.VaultNamespace, Timeout: 15 * time.Second}
	if o.rotationAuth.Method == "cert" {
		vcfg.ClientCert, vcfg.ClientKey = o.rotationAuth.ClientCert, o.rotationAuth.ClientKey
	}
	vc, err := vault.NewClient(vcfg)
	if err != nil {
		return fmt.Errorf("rotation vault client: %w", err)
	}
	session := vault.NewSession(vc, method, mgr.GetLogger().WithName("rotation-vault"))
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { session.Run(ctx); return nil })); err != nil {
		return err
	}
	env := &autopilot.LiveEnv{Vault: vc, Session: session, KV: etcd, Prefix: o.etcd.Prefix, Targets: targets, Kube: mgr.GetConfig(),
		Workers: o.rotationWorkers, TestOnlySettle: o.testOnlySettle, ScannedKey: func(ctx context.Context) (string, error) { return key(ctx) }}
	r := &autopilot.Reconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Machine: &autopilot.Machine{Env: env, Clock: clock.RealClock{}},
		Recorder: mgr.GetEventRecorder("vaultkms-auditor"), Log: mgr.GetLogger().WithName("rotation")}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("rotation controller: %w", err)
	}
	// The policies' status (stage, reason, times, versions) as metrics,
	// read from the cache the autopilot watches through.
	metrics.Registry.MustRegister(&autopilot.StatusCollector{Reader: mgr.GetClient(), Log: mgr.GetLogger().WithName("rotation-metrics")})
	mgr.GetLogger().Info("rotation autopilot on", "vault", addr, "auth", o.rotationAuth.Method)
	return nil
}

// resourceNames returns what each scan covers. The auditor publishes
// what it proves, so what it cannot scan by name (a wildcard in the
// EncryptionConfiguration) stops it instead of going unsaid.
func resourceNames(o options) ([]scan.Resource, error) {
	names, wild, err := o.scope.Resolve()
	if err != nil {
		return nil, err
	}
	if len(wild) > 0 {
		return nil, fmt.Errorf("--encryption-config %s has wildcard entries %v that cannot be scanned by name: list the resources with --resources", o.scope.EncryptionConfig, wild)
	}
	return names, nil
}

func keySource(o options) (publisher.KeySource, error) {
	k := o.key
	if err := k.Check(); err != nil {
		return nil, err
	}
	switch {
	case k.CurrentKeyID != "":
		return func(context.Context) (string, error) { return k.CurrentKeyID, nil }, nil
	case k.KMSSocket != "":
		return func(ctx context.Context) (string, error) {
			id, _, err := keysource.FromPlugin(ctx, k.KMSSocket)
			return id, err
		}, nil
	case k.FromVaultWanted():
		// Checked here, not at the first scan: the auditor would otherwise
		// start and fail every scan on a missing file's empty name.
		if k.VaultTokenFile == "" {
			return nil, fmt.Errorf("--transit-key %q needs --vault-token-file: a token allowed to read %s/keys/%s", k.TransitKey, k.TransitMount, k.TransitKey)
		}
		c, err := vault.NewClient(vault.Config{Address: k.VaultAddr, CACert: k.VaultCACert, Namespace: k.VaultNamespace, Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		m := vault.TokenFile{Path: k.VaultTokenFile}
		return func(ctx context.Context) (string, error) {
			auth, err := m.Login(ctx, c)
			if err != nil {
				return "", err
			}
			c.SetToken(auth.ClientToken)
			tk, err := keysource.FromVault(ctx, c, k.VaultNamespace, k.TransitMount, k.TransitKey)
			return tk.Current.String(), err
		}, nil
	}
	return nil, errors.New("the auditor needs the current key_id: give --kms-socket, --transit-key with --vault-addr and --vault-token-file, or --current-key-id")
}
