package ha

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/verifier/keysource"
)

const (
	transitKey = "kubernetes"
	provider   = "vault"
	// pluginUID is the unprivileged user the plugin image runs as.
	pluginUID = 65532
)

// cluster is the whole topology: three Vault nodes (raft, TLS), three etcd
// members, and two kube-apiservers each with its own plugin container.
type cluster struct {
	t       *testing.T
	d       *docker
	network string
	dir     string
	ca      *ca
	caFile  string

	etcd  []*box
	vault []*box

	rootToken, unsealKey string
	rootTokenFile        string

	// multiAddr says the plugin accepted all three Vault addresses in
	// --vault-addr; without it each plugin talks to vault-0 only.
	multiAddr   bool
	pluginImage string
	pluginToken string

	apis []*apiServer

	kubectlVaultkms string
}

// apiServer is one kube-apiserver container and the plugin container
// beside it; they share the socket directory sockDir.
type apiServer struct {
	name    string
	box     *box
	plugin  *box
	sockDir string
	rest    *rest.Config
	client  kubernetes.Interface
}

func vaultAlias(i int) string { return fmt.Sprintf("vault-%d", i) }
func etcdAlias(i int) string  { return fmt.Sprintf("etcd-%d", i) }

func startCluster(t *testing.T) *cluster {
	t.Helper()
	start := time.Now()
	c := &cluster{t: t, d: newDocker(t), dir: t.TempDir()}
	root := moduleRoot(t)
	images := filepath.Join(root, "e2e", "ha", "images")
	component := filepath.Join(images, "component.Dockerfile")
	etcdImage := c.d.image(t, "etcd", component, harness.Binary(t, "etcd"))
	vaultImage := c.d.image(t, "vault", component, harness.Binary(t, "vault"))
	apiImage := c.d.image(t, "kube-apiserver", component, harness.Binary(t, "kube-apiserver"))
	build := t.TempDir()
	// VAULTKMS_HA_PLUGIN_BIN runs the test against a plugin built
	// elsewhere (such as bin/vaultkms-plugin from `make build`).
	pluginBin := os.Getenv("VAULTKMS_HA_PLUGIN_BIN")
	if pluginBin == "" {
		pluginBin = goBuild(t, root, "./cmd/vaultkms-plugin", build)
	}
	c.pluginImage = c.d.image(t, "vaultkms-plugin", filepath.Join(images, "vaultkms.Dockerfile"), pluginBin)
	c.kubectlVaultkms = goBuild(t, root, "./cmd/kubectl-vaultkms", build)
	t.Logf("images and binaries ready after %s", time.Since(start).Round(100*time.Millisecond))

	c.network = c.d.newNetwork(t)
	c.ca = newCA(t, "ha")
	c.caFile = c.write("ca.crt", c.ca.certPEM)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.startEtcd(etcdImage) }()
	go func() { defer wg.Done(); c.startVault(vaultImage) }()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("etcd (3 members) and Vault (3 raft voters) ready after %s", time.Since(start).Round(100*time.Millisecond))
	c.setupVault()
	c.startAPIServers(apiImage)
	t.Logf("control plane ready after %s (plugins given %s)", time.Since(start).Round(100*time.Millisecond), c.vaultAddrs())
	return c
}

func (c *cluster) write(name string, b []byte) string {
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// --- etcd ---

func (c *cluster) startEtcd(image string) {
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("%s=http://%s:2380", etcdAlias(i), etcdAlias(i)))
	}
	for i := range 3 {
		n := etcdAlias(i)
		c.etcd = append(c.etcd, c.d.start(c.t, c.network, spec{alias: n, image: image, ports: []string{"2379/tcp"}, cmd: []string{
			"--name=" + n, "--data-dir=/var/lib/etcd",
			"--listen-client-urls=http://0.0.0.0:2379", "--advertise-client-urls=http://" + n + ":2379",
			"--listen-peer-urls=http://0.0.0.0:2380", "--initial-advertise-peer-urls=http://" + n + ":2380",
			"--initial-cluster=" + strings.Join(peers, ","), "--initial-cluster-token=ha-" + runID, "--initial-cluster-state=new",
			"--log-level=warn",
		}}))
	}
	for i := range c.etcd {
		c.waitEtcd(c.t, i, 60*time.Second)
	}
}

// etcdStatus asks member i for its status through its own endpoint.
func (c *cluster) etcdStatus(t testing.TB, i int, timeout time.Duration) (*clientv3.StatusResponse, error) {
	ep := "http://" + c.etcd[i].addr(t, "2379/tcp")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: timeout})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return cli.Status(ctx, ep)
}

func (c *cluster) waitEtcd(t testing.TB, i int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.etcdStatus(t, i, 2*time.Second)
		if err == nil && st.Leader != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd member %d not healthy within %s: %v", i, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// etcdLeader returns the index of etcd's leader.
func (c *cluster) etcdLeader(t testing.TB) int {
	t.Helper()
	for i := range c.etcd {
		st, err := c.etcdStatus(t, i, 5*time.Second)
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	t.Fatal("no etcd member says it is the leader")
	return -1
}

// --- Vault ---

func (c *cluster) startVault(image string) {
	t := c.t
	for i := range 3 {
		n := vaultAlias(i)
		crt, key := c.ca.serving(t, []string{n, "localhost"})
		cfg := fmt.Sprintf(`disable_mlock = true
api_addr      = "https://%[1]s:8200"
cluster_addr  = "https://%[1]s:8201"
log_level     = "warn"
storage "raft" {
  path                   = "/vault/data"
  node_id                = "%[1]s"
  performance_multiplier = 1
}
listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/vault/tls/tls.crt"
  tls_key_file    = "/vault/tls/tls.key"
}
`, n)
		c.vault = append(c.vault, c.d.start(t, c.network, spec{alias: n, image: image, ports: []string{"8200/tcp"},
			cmd:   []string{"server", "-config=/vault/config/vault.hcl"},
			tmpfs: []string{"/tmp"},
			files: map[string][]byte{
				"/vault/config/vault.hcl": []byte(cfg), "/vault/tls/tls.crt": crt, "/vault/tls/tls.key": key,
				"/vault/data/.created-by-test": nil,
			}}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range c.vault {
		c.waitVaultAnswers(t, i, time.Minute)
	}
	init, err := c.vaultClient(t, 0, "").Sys().InitWithContext(ctx, &vaultapi.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("vault init: %v", err)
	}
	c.rootToken, c.unsealKey = init.RootToken, init.KeysB64[0]
	c.rootTokenFile = c.write("root-token", []byte(c.rootToken))
	c.unseal(t, 0)
	c.waitVaultHealth(t, 0, func(h *vaultapi.HealthResponse) bool { return !h.Sealed && !h.Standby }, time.Minute)
	// Joined nodes become voters after the stabilization time; keep it
	// short so the cluster can lose a node soon after it is formed.
	if _, err := c.vaultClient(t, 0, c.rootToken).Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
		map[string]any{"server_stabilization_time": "2s"}); err != nil {
		t.Fatalf("autopilot configuration: %v", err)
	}
	for i := 1; i < 3; i++ {
		if _, err := c.vaultClient(t, i, "").Sys().RaftJoinWithContext(ctx, &vaultapi.RaftJoinRequest{
			LeaderAPIAddr: "https://" + vaultAlias(0) + ":8200", LeaderCACert: string(c.ca.certPEM)}); err != nil {
			t.Fatalf("vault-%d raft join: %v", i, err)
		}
		c.unseal(t, i)
	}
	c.waitVoters(t, 3, 2*time.Minute)
}

// vaultClient talks to node i from the host, with token.
func (c *cluster) vaultClient(t testing.TB, i int, token string) *vaultapi.Client {
	t.Helper()
	vc, err := c.vaultClientAt(c.vault[i].addr(t, "8200/tcp"), token)
	if err != nil {
		t.Fatalf("vault client: %v", err)
	}
	return vc
}

// vaultClientAt talks to the Vault node at the host address addr.
func (c *cluster) vaultClientAt(addr, token string) (*vaultapi.Client, error) {
	cfg := vaultapi.DefaultConfig()
	cfg.Address = "https://" + addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	if err := cfg.ConfigureTLS(&vaultapi.TLSConfig{CACertBytes: c.ca.certPEM}); err != nil {
		return nil, err
	}
	vc, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	vc.SetToken(token)
	return vc, nil
}

func (c *cluster) waitVaultAnswers(t testing.TB, i int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.vaultClient(t, i, "").Sys().SealStatusWithContext(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault-%d does not answer within %s: %v", i, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *cluster) unseal(t testing.TB, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.vaultClient(t, i, "").Sys().UnsealWithContext(ctx, c.unsealKey); err != nil {
		t.Fatalf("unseal vault-%d: %v", i, err)
	}
}

func (c *cluster) waitVaultHealth(t testing.TB, i int, ok func(*vaultapi.HealthResponse) bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err := c.vaultClient(t, i, "").Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && ok(h) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault-%d not in the expected state within %s: %+v %v", i, timeout, h, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitVoters waits until the raft configuration lists n voters, asking
// whichever node answers.
func (c *cluster) waitVoters(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		for i := range c.vault {
			if !c.vault[i].running(context.Background()) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := c.vaultClient(t, i, c.rootToken).Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
			cancel()
			if err != nil || s == nil {
				last = fmt.Sprint(err)
				continue
			}
			voters := 0
			cfg, _ := s.Data["config"].(map[string]any)
			servers, _ := cfg["servers"].([]any)
			for _, sv := range servers {
				if m, _ := sv.(map[string]any); m["voter"] == true {
					voters++
				}
			}
			if voters >= n {
				return
			}
			last = fmt.Sprintf("%d voters of %d servers", voters, len(servers))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault raft has not %d voters within %s: %s", n, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// activeVault returns the index of the active node.
func (c *cluster) activeVault(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for i := range c.vault {
			if !c.vault[i].running(context.Background()) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			h, err := c.vaultClient(t, i, "").Sys().HealthWithContext(ctx)
			cancel()
			if err == nil && !h.Sealed && !h.Standby {
				return i
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("no active Vault node")
	return -1
}

// setupVault enables Transit with the key, and gives the plugins a token
// of the README's least-privilege policy.
func (c *cluster) setupVault() {
	t := c.t
	vc := c.vaultClient(t, c.activeVault(t), c.rootToken)
	if err := vc.Sys().Mount("transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("mount transit: %v", err)
	}
	if _, err := vc.Logical().Write("transit/keys/"+transitKey, nil); err != nil {
		t.Fatalf("create transit key: %v", err)
	}
	policy := fmt.Sprintf(`path "transit/keys/%[1]s" { capabilities = ["read"] }
path "transit/encrypt/%[1]s" { capabilities = ["update"] }
path "transit/decrypt/%[1]s" { capabilities = ["update"] }
`, transitKey)
	if err := vc.Sys().PutPolicy("vaultkms-plugin", policy); err != nil {
		t.Fatalf("plugin policy: %v", err)
	}
	s, err := vc.Logical().Write("auth/token/create-orphan", map[string]any{"policies": []string{"vaultkms-plugin"}, "ttl": "24h"})
	if err != nil || s == nil || s.Auth == nil {
		t.Fatalf("plugin token: %v", err)
	}
	c.pluginToken = s.Auth.ClientToken
}

// currentKeyID is the key_id the plugins should report: the Transit key's
// latest version, read from Vault.
func (c *cluster) currentKeyID(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k, err := keysource.FromVault(ctx, c.vaultClient(t, c.activeVault(t), c.rootToken), "", "transit", transitKey)
	if err != nil {
		t.Fatalf("read transit key: %v", err)
	}
	return k.Current.String()
}

// --- plugins and API servers ---

func (c *cluster) vaultAddrs() string {
	if !c.multiAddr {
		return "https://" + vaultAlias(0) + ":8200"
	}
	var a []string
	for i := range c.vault {
		a = append(a, "https://"+vaultAlias(i)+":8200")
	}
	return strings.Join(a, ",")
}

// startPlugin starts a plugin container serving on sockDir.
func (c *cluster) startPlugin(t *testing.T, name, sockDir string) *box {
	t.Helper()
	return c.d.start(t, c.network, spec{alias: name, image: c.pluginImage, ports: []string{"8787/tcp"},
		binds: []string{sockDir + ":/run/vaultkms"},
		files: map[string][]byte{"/etc/vaultkms/ca.crt": c.ca.certPEM, "/etc/vaultkms/token": []byte(c.pluginToken)},
		cmd: []string{
			"--listen=unix:///run/vaultkms/kms.sock",
			"--vault-addr=" + c.vaultAddrs(),
			"--vault-ca-cert=/etc/vaultkms/ca.crt",
			"--transit-key=" + transitKey,
			"--token-file=/etc/vaultkms/token",
			// Short intervals so a lost Vault shows within seconds.
			"--key-refresh-interval=1s",
			"--vault-timeout=2s",
			"--health-addr=0.0.0.0:8787",
		}})
}

// pluginReady asks a plugin's /readyz from the host.
func pluginReady(t testing.TB, p *box) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	mp, err := p.c.MappedPort(ctx2, "8787/tcp")
	if err != nil {
		return false, err.Error()
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/readyz", mp.Num()), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode == 200, strings.TrimSpace(b.String())
}

// waitPluginReady waits for the plugin's readiness; it returns false when
// the container stopped (it rejected its flags) or timeout passed.
func waitPluginReady(t testing.TB, p *box, timeout time.Duration) (bool, string) {
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		if !p.running(context.Background()) {
			return false, "container exited"
		}
		ok, detail := pluginReady(t, p)
		if ok {
			return true, detail
		}
		last = detail
		time.Sleep(250 * time.Millisecond)
	}
	return false, last
}

// socketDir is a host directory shared by a plugin and its API server; the
// plugin's unprivileged user owns it.
func (c *cluster) socketDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "vkha")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chown(d, pluginUID, pluginUID); err != nil {
		t.Fatalf("chown socket dir: %v", err)
	}
	return d
}

func (c *cluster) startAPIServers(image string) {
	t := c.t
	names := []string{"apiserver-a", "apiserver-b"}
	// One serving certificate and one client CA for both: a client of one
	// is a client of the other, as behind a load balancer.
	srvCrt, srvKey := c.ca.serving(t, append(names, "localhost", "kubernetes", "kubernetes.default.svc"), "10.0.0.1")
	admCrt, admKey := c.ca.client(t, "ha-admin", "system:masters")
	saKey := serviceAccountKey(t)

	// The plugins first: kube-apiserver wants their Status at start.
	c.multiAddr = true
	for i, n := range names {
		a := &apiServer{name: n, sockDir: c.socketDir(t)}
		a.plugin = c.startPlugin(t, "plugin-"+n[len(n)-1:], a.sockDir)
		ok, detail := waitPluginReady(t, a.plugin, 30*time.Second)
		if !ok && i == 0 && c.multiAddr {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			logs := a.plugin.logs(ctx, 5)
			cancel()
			t.Logf("the plugin does not take several Vault addresses in --vault-addr (%s):\n%s\nfalling back to vault-0 alone; ActiveVaultNodeStopped will show what that costs", detail, logs)
			a.plugin.remove(t)
			c.multiAddr = false
			a.plugin = c.startPlugin(t, "plugin-"+n[len(n)-1:], a.sockDir)
			ok, detail = waitPluginReady(t, a.plugin, 30*time.Second)
		}
		if !ok {
			t.Fatalf("plugin %s not ready: %s", a.plugin.name, detail)
		}
		c.apis = append(c.apis, a)
	}
	var etcdServers []string
	for i := range c.etcd {
		etcdServers = append(etcdServers, "http://"+etcdAlias(i)+":2379")
	}
	for _, a := range c.apis {
		a.box = c.d.start(t, c.network, spec{alias: a.name, image: image, ports: []string{"6443/tcp"},
			binds: []string{a.sockDir + ":/run/vaultkms"},
			tmpfs: []string{"/tmp", "/var/run/kubernetes"},
			files: map[string][]byte{
				"/etc/kubernetes/pki/ca.crt":        c.ca.certPEM,
				"/etc/kubernetes/pki/apiserver.crt": srvCrt,
				"/etc/kubernetes/pki/apiserver.key": srvKey,
				"/etc/kubernetes/pki/sa.key":        saKey,
				"/etc/kubernetes/enc/config.yaml":   []byte(harness.KMSEncryptionConfig(provider, "/run/vaultkms/kms.sock")),
			},
			cmd: []string{
				"--etcd-servers=" + strings.Join(etcdServers, ","),
				"--secure-port=6443",
				"--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
				"--tls-private-key-file=/etc/kubernetes/pki/apiserver.key",
				"--client-ca-file=/etc/kubernetes/pki/ca.crt",
				"--service-account-issuer=https://kubernetes.default.svc",
				"--service-account-key-file=/etc/kubernetes/pki/sa.key",
				"--service-account-signing-key-file=/etc/kubernetes/pki/sa.key",
				"--service-cluster-ip-range=10.0.0.0/24",
				"--authorization-mode=Node,RBAC",
				"--encryption-provider-config=/etc/kubernetes/enc/config.yaml",
				"--encryption-provider-config-automatic-reload=true",
			}})
	}
	for _, a := range c.apis {
		a.rest = &rest.Config{Host: "https://" + a.box.addr(t, "6443/tcp"), QPS: 500, Burst: 1000, Timeout: 15 * time.Second,
			TLSClientConfig: rest.TLSClientConfig{CAData: c.ca.certPEM, CertData: admCrt, KeyData: admKey}}
		cl, err := kubernetes.NewForConfig(a.rest)
		if err != nil {
			t.Fatal(err)
		}
		a.client = cl
	}
	for _, a := range c.apis {
		deadline := time.Now().Add(3 * time.Minute)
		for {
			ok, detail := a.readyz(context.Background(), "")
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready within 3m: %s", a.name, detail)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	c.writeKubeconfig(admCrt, admKey)
}

// readyz asks the API server for one readiness check ("" for all).
func (a *apiServer) readyz(ctx context.Context, check string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	path := "/readyz"
	if check != "" {
		path += "/" + check
	}
	body, err := a.client.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	if err != nil {
		return false, strings.TrimSpace(string(body) + " " + err.Error())
	}
	return true, strings.TrimSpace(string(body))
}

// kmsReady asks /readyz/kms-providers until the API server answers: a
// request that times out on a busy machine says nothing about KMS health,
// so only an answer naming the provider counts (its failures read
// "kms-provider-0: ..."), or ten seconds without one.
func (a *apiServer) kmsReady(ctx context.Context) (bool, string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, detail := a.readyz(ctx, "kms-providers")
		if ok || strings.Contains(detail, "kms-provider-") || time.Now().After(deadline) || ctx.Err() != nil {
			return ok, detail
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// keyIDHash returns the key_id hash this API server last saw from the
// plugin, from its own /metrics, and its apiserver_id_hash.
func (a *apiServer) keyIDHash(ctx context.Context) (idHash, keyHash string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := a.client.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return "", "", err
	}
	keys, err := keysource.FromAPIServerMetrics(strings.NewReader(string(body)))
	if err != nil {
		return "", "", err
	}
	for _, k := range keys {
		if k.Provider == provider {
			return k.APIServerIDHash, k.KeyIDHash, nil
		}
	}
	return "", "", fmt.Errorf("%s reports no key_id for provider %q yet", a.name, provider)
}

// writeKubeconfig writes the admin kubeconfig of the first API server,
// for kubectl-vaultkms.
func (c *cluster) writeKubeconfig(crt, key []byte) {
	b64 := base64.StdEncoding.EncodeToString
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: ha
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: ha
  context: {cluster: ha, user: admin}
current-context: ha
`, c.apis[0].rest.Host, b64(c.ca.certPEM), b64(crt), b64(key))
	c.write("kubeconfig", []byte(kc))
}
