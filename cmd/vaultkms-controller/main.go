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
	"os"
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
	flag.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", "vaultkms-system"), "the controller's own namespace (holds its HMAC key)")
	flag.StringVar(&o.hmacSecret, "hmac-key-secret", "vaultkms-hmac-key", "Secret in --namespace holding the key for status data HMACs; created if missing")
	flag.BoolVar(&o.syncer, "enable-vaultsecrets", true, "run the VaultSecret syncer")
	printVersion := flag.Bool("version", false, "print the version and exit")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("vaultkms-controller"))
		return nil
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))

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
		Scheme: scheme,
		// Only Secrets this controller manages are cached, so memory does
		// not grow with the cluster's other Secrets.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{syncer.ManagedByLabel: syncer.ManagedByValue})},
		}},
		Metrics:                metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress: o.probeAddr,
		LeaderElection:         o.leaderElect,
		LeaderElectionID:       "vaultkms-controller.secrets.vaultkms.io",
		// The Lease lives in the controller's own namespace, which also
		// lets it run outside a pod (no in-cluster namespace file there).
		LeaderElectionNamespace: o.namespace,
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
	base, err := vault.NewClient(vault.Config{Address: o.vaultAddr, CACert: o.vaultCACert, Namespace: o.vaultNamespace, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	key, err := hmacKey(context.Background(), mgr.GetAPIReader(), kube, o.namespace, o.hmacSecret)
	if err != nil {
		return err
	}
	m := syncer.NewMetrics(metrics.Registry)
	r := &syncer.Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Tenants:  &syncer.Tenants{Base: base, Kube: kube, Clock: clock.RealClock{}, Logins: m.Login},
		Clock:    clock.RealClock{},
		Recorder: mgr.GetEventRecorder("vaultkms-controller"),
		HMACKey:  key,
		Metrics:  m,
		Log:      mgr.GetLogger().WithName("vaultsecret"),
	}
	return r.SetupWithManager(mgr)
}

// hmacKey reads the key for status HMACs, creating it on first start. It is
// kept in a Secret so HMACs stay comparable across restarts.
func hmacKey(ctx context.Context, reader client.Reader, kube kubernetes.Interface, ns, name string) ([]byte, error) {
	var s corev1.Secret
	err := reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s)
	if err == nil && len(s.Data["key"]) >= 32 {
		return s.Data["key"], nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
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
	if apierrors.IsAlreadyExists(err) {
		return hmacKey(ctx, reader, kube, ns, name)
	}
	if err != nil {
		return nil, fmt.Errorf("create HMAC key Secret %s/%s: %w", ns, name, err)
	}
	return key, nil
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
