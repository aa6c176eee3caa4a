package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ControlPlane is a real etcd and kube-apiserver started through
// controller-runtime's envtest with the binaries in bin/.
type ControlPlane struct {
	Env    *envtest.Environment
	Config *rest.Config
	Client kubernetes.Interface
	// EtcdURL is etcd's client URL, for reading raw values.
	EtcdURL string
	// EncryptionConfigPath is the file the API server reads (and, with
	// automatic reload, re-reads).
	EncryptionConfigPath string
	// ServingCAFile is the CA of the API server's serving certificate,
	// with ControlPlaneOptions.Node only.
	ServingCAFile string
	// With ControlPlaneOptions.Node only, etcd runs as on a kubeadm node
	// (TLS, client certificates, auth on; EtcdURL is its TLS listener):
	// EtcdRoot is kube-apiserver's identity (etcd's root), EtcdReader a
	// user that may only read /registry/ (the auditor's).
	EtcdRoot, EtcdReader *EtcdIdentity
	nodeEtcd             *nodeEtcd

	env  Env
	etcd *clientv3.Client
}

// ControlPlaneOptions configures StartControlPlane.
type ControlPlaneOptions struct {
	// EncryptionConfig is an EncryptionConfiguration in YAML; empty leaves
	// encryption at rest off.
	EncryptionConfig string
	// Args are extra kube-apiserver flags.
	Args map[string]string
	// CRDDirs are directories of CustomResourceDefinitions to install.
	CRDDirs []string
	// Node prepares the API server for a kubelet (StartNode): reachable
	// from pods, its certificate valid for the kubernetes Service's
	// ClusterIP, the ServiceAccount admission plugin on, kubelets reached
	// at their InternalIP.
	Node bool
}

// StartControlPlane starts etcd and kube-apiserver; they stop on cleanup.
func StartControlPlane(env Env, opts ControlPlaneOptions) *ControlPlane {
	env.Helper()
	dir, err := BinDir()
	if err != nil {
		env.Fatalf("%v", err)
	}
	Binary(env, "etcd")
	Binary(env, "kube-apiserver")
	cp := &ControlPlane{env: env}
	cp.Env = &envtest.Environment{
		BinaryAssetsDirectory:    dir,
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
		CRDDirectoryPaths:        opts.CRDDirs,
		ErrorIfCRDPathMissing:    true,
	}
	api := cp.Env.ControlPlane.GetAPIServer()
	api.Path = withParentDeath(env, filepath.Join(dir, "kube-apiserver"))
	cp.Env.ControlPlane.Etcd = &envtest.Etcd{Path: withParentDeath(env, filepath.Join(dir, "etcd"))}
	// A fixed certificate directory keeps the serving certificate across
	// an API server restart.
	api.CertDir = env.TempDir()
	args := api.Configure()
	if opts.EncryptionConfig != "" {
		cp.EncryptionConfigPath = filepath.Join(env.TempDir(), "encryption-config.yaml")
		if err := os.WriteFile(cp.EncryptionConfigPath, []byte(opts.EncryptionConfig), 0o600); err != nil {
			env.Fatalf("write encryption config: %v", err)
		}
		args.Set("encryption-provider-config", cp.EncryptionConfigPath)
		args.Set("encryption-provider-config-automatic-reload", "true")
	}
	if opts.Node {
		caPEM, caFile, err := writeNodeServingCerts(api.CertDir)
		if err != nil {
			env.Fatalf("certificates for a control plane with a node: %v", err)
		}
		api.SecureServing.CA = caPEM
		cp.ServingCAFile = caFile
		for k, v := range nodeAPIServerArgs(api.CertDir) {
			args.Set(k, v)
		}
		args.Disable("disable-admission-plugins")
		cp.nodeEtcd = configureNodeEtcd(env, cp.Env.ControlPlane.Etcd, api)
	}
	for k, v := range opts.Args {
		args.Set(k, v)
	}
	cfg, err := cp.Env.Start()
	if err != nil {
		env.Fatalf("start etcd and kube-apiserver: %v", err)
	}
	env.Cleanup(func() {
		if cp.etcd != nil {
			cp.etcd.Close()
		}
		if err := cp.Env.Stop(); err != nil {
			env.Logf("stop control plane: %v", err)
		}
	})
	cp.EtcdURL = cp.Env.ControlPlane.Etcd.URL.String()
	if ne := cp.nodeEtcd; ne != nil {
		cp.EtcdURL, cp.EtcdRoot, cp.EtcdReader = ne.URL(), ne.root, ne.reader
		if err := ne.enableAuth(cp.Etcd()); err != nil {
			env.Fatalf("%v", err)
		}
	}
	cp.setConfig(cfg)
	return cp
}

func (cp *ControlPlane) setConfig(cfg *rest.Config) {
	cp.Config = cfg
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		cp.env.Fatalf("kubernetes client: %v", err)
	}
	cp.Client = c
}

// RepoPath returns path (slash separated, from the module root) as an
// absolute path.
func RepoPath(env Env, path string) string {
	env.Helper()
	root, err := ModuleRoot()
	if err != nil {
		env.Fatalf("%v", err)
	}
	return filepath.Join(root, filepath.FromSlash(path))
}

// RestartAPIServer stops kube-apiserver and starts it again on the same
// port and etcd, which empties its DEK cache; Config and Client are
// replaced with ones the new process accepts.
func (cp *ControlPlane) RestartAPIServer() {
	cp.env.Helper()
	api := cp.Env.ControlPlane.GetAPIServer()
	if err := api.Stop(); err != nil {
		cp.env.Fatalf("stop kube-apiserver: %v", err)
	}
	if err := api.Start(); err != nil {
		cp.env.Fatalf("start kube-apiserver again: %v", err)
	}
	user, err := cp.Env.ControlPlane.AddUser(envtest.User{Name: "vaultkms-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		cp.env.Fatalf("admin user after restart: %v", err)
	}
	cp.setConfig(user.Config())
}

// Etcd returns a client of the control plane's etcd.
func (cp *ControlPlane) Etcd() *clientv3.Client {
	cp.env.Helper()
	if cp.etcd == nil {
		var c *clientv3.Client
		var err error
		if cp.EtcdRoot != nil {
			c, err = tlsClient(cp.EtcdURL, cp.EtcdRoot)
		} else {
			c, err = clientv3.New(clientv3.Config{Endpoints: []string{cp.EtcdURL}, DialTimeout: 5 * time.Second})
		}
		if err != nil {
			cp.env.Fatalf("etcd client: %v", err)
		}
		cp.etcd = c
	}
	return cp.etcd
}

// RawGet returns the value etcd holds at key, as stored by the API server.
func (cp *ControlPlane) RawGet(key string) []byte {
	cp.env.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cp.Etcd().Get(ctx, key)
	if err != nil {
		cp.env.Fatalf("etcd get %s: %v", key, err)
	}
	if len(r.Kvs) == 0 {
		cp.env.Fatalf("etcd has no key %s", key)
	}
	return r.Kvs[0].Value
}

// Readyz asks kube-apiserver for one readiness check (such as
// "kms-providers") and returns whether it passed and the body.
func (cp *ControlPlane) Readyz(ctx context.Context, check string) (bool, string) {
	body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz/" + check).DoRaw(ctx)
	if err != nil {
		return false, strings.TrimSpace(string(body) + " " + err.Error())
	}
	return true, string(body)
}

// KMSEncryptionConfig returns an EncryptionConfiguration that encrypts
// resources with the KMS v2 plugin on socket, with identity as a fallback
// for reading what was stored before.
func KMSEncryptionConfig(provider, socket string, resources ...string) string {
	return encryptionConfig(provider, socket, false, resources)
}

// IdentityFirstEncryptionConfig lists the plugin second: writes stay in
// plaintext while the plugin can already decrypt. It is the state before
// encryption is switched on.
func IdentityFirstEncryptionConfig(provider, socket string, resources ...string) string {
	return encryptionConfig(provider, socket, true, resources)
}

func encryptionConfig(provider, socket string, identityFirst bool, resources []string) string {
	if len(resources) == 0 {
		resources = []string{"secrets"}
	}
	kms := fmt.Sprintf(`      - kms:
          apiVersion: v2
          name: %s
          endpoint: unix://%s
          timeout: 3s
`, provider, socket)
	identity := "      - identity: {}\n"
	providers := kms + identity
	if identityFirst {
		providers = identity + kms
	}
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [%s]
    providers:
%s`, strings.Join(resources, ", "), providers)
}

// SetEncryptionConfig replaces the EncryptionConfiguration and restarts
// kube-apiserver so it takes effect at once (automatic reload would take
// up to a minute).
func (cp *ControlPlane) SetEncryptionConfig(config string) {
	cp.env.Helper()
	if err := os.WriteFile(cp.EncryptionConfigPath, []byte(config), 0o600); err != nil {
		cp.env.Fatalf("write encryption config: %v", err)
	}
	cp.RestartAPIServer()
}

// WriteKubeconfig writes an admin kubeconfig for kubectl to path.
func (cp *ControlPlane) WriteKubeconfig(path string) error {
	user, err := cp.Env.ControlPlane.AddUser(envtest.User{Name: "vaultkms-demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	b, err := user.KubeConfig()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// StartEtcd starts a lone etcd (for scans that need no API server) and
// returns its client URL; it stops on cleanup.
func StartEtcd(env Env) string {
	env.Helper()
	e := &envtest.Etcd{Path: withParentDeath(env, Binary(env, "etcd")), DataDir: env.TempDir(), StartTimeout: time.Minute, StopTimeout: 30 * time.Second}
	if err := e.Start(); err != nil {
		env.Fatalf("start etcd: %v", err)
	}
	env.Cleanup(func() { e.Stop() })
	return e.URL.String()
}

// APIServer is a further kube-apiserver sharing the control plane's etcd,
// with its own port, EncryptionConfiguration and (through it) plugin: a
// second API server of the same cluster.
type APIServer struct {
	API *envtest.APIServer
	// URL is https://127.0.0.1:<port>.
	URL string
	// Config is an admin client config of this API server.
	Config               *rest.Config
	EncryptionConfigPath string
	stopOnce             sync.Once
}

// StartAPIServer starts another kube-apiserver on the control plane's etcd.
// It serves the same certificate and trusts the same client CA as the
// first, so every user of the control plane is accepted by both.
func (cp *ControlPlane) StartAPIServer(encryptionConfig string) *APIServer {
	cp.env.Helper()
	first := cp.Env.ControlPlane.GetAPIServer()
	dir := cp.env.TempDir()
	for _, f := range []string{"apiserver.crt", "apiserver.key", "sa-signer.crt", "sa-signer.key"} {
		b, err := os.ReadFile(filepath.Join(first.CertDir, f))
		if err != nil {
			cp.env.Fatalf("copy %s of the first API server: %v", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			cp.env.Fatalf("%v", err)
		}
	}
	api := &envtest.APIServer{EtcdURL: first.EtcdURL, CertDir: dir, Path: first.Path, StartTimeout: 90 * time.Second, StopTimeout: 30 * time.Second}
	api.SecureServing.Authn = first.SecureServing.Authn
	a := &APIServer{API: api}
	if encryptionConfig != "" {
		a.EncryptionConfigPath = filepath.Join(dir, "encryption-config.yaml")
		if err := os.WriteFile(a.EncryptionConfigPath, []byte(encryptionConfig), 0o600); err != nil {
			cp.env.Fatalf("write encryption config: %v", err)
		}
		api.Configure().Set("encryption-provider-config", a.EncryptionConfigPath)
		api.Configure().Set("encryption-provider-config-automatic-reload", "true")
	}
	if err := api.Start(); err != nil {
		cp.env.Fatalf("start a second kube-apiserver: %v", err)
	}
	cp.env.Cleanup(func() { a.Stop() })
	a.URL = api.SecureServing.URL("https", "").String()
	a.Config = rest.CopyConfig(cp.Config)
	a.Config.Host = a.URL
	return a
}

// Stop stops this API server (cleanup does too).
func (a *APIServer) Stop() {
	a.stopOnce.Do(func() {
		if err := a.API.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop kube-apiserver: %v\n", err)
		}
	})
}
