package harness

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// EtcdIdentity is an etcd client certificate: with etcd's auth on, its
// common name is the etcd user.
type EtcdIdentity struct {
	CA, Cert, Key string
}

// Args are kubectl-vaultkms's (and the auditor's) flags for it.
func (id *EtcdIdentity) Args() []string {
	return []string{"--etcd-cacert", id.CA, "--etcd-cert", id.Cert, "--etcd-key", id.Key}
}

// etcdReaderUser is the read-only etcd user of the control plane with a
// node: the auditor's identity, as docs/install-chart.md has operators
// create it (a role that may only read kube-apiserver's prefix).
const etcdReaderUser = "vaultkms-auditor"

// nodeEtcd is the TLS side of a control plane with a node: etcd as a
// kubeadm cluster runs it (TLS with client certificates, reachable from
// the node's pods) with its auth on, kube-apiserver authenticating as
// root, and a read-only user for the auditor. envtest keeps a plain
// listener on 127.0.0.1 for its health check, which auth closes to
// every other request.
type nodeEtcd struct {
	dir     string
	ca      *CA
	serving [2]string // cert, key
	port    int
	root    *EtcdIdentity
	reader  *EtcdIdentity
}

// configureNodeEtcd sets etcd's and kube-apiserver's flags for it, before
// the control plane starts.
func configureNodeEtcd(env Env, etcd *envtest.Etcd, api *envtest.APIServer) *nodeEtcd {
	env.Helper()
	ne := &nodeEtcd{dir: env.TempDir()}
	var err error
	if ne.ca, err = NewCA(ne.dir, "etcd"); err != nil {
		env.Fatalf("etcd CA: %v", err)
	}
	if ne.serving[0], ne.serving[1], err = ne.ca.IssueServer(ne.dir, "etcd-server"); err != nil {
		env.Fatalf("etcd serving certificate: %v", err)
	}
	issue := func(user string) *EtcdIdentity {
		crt, key, err := ne.ca.Issue(ne.dir, user, false)
		if err != nil {
			env.Fatalf("etcd client certificate %s: %v", user, err)
		}
		return &EtcdIdentity{CA: ne.ca.CertFile, Cert: crt, Key: key}
	}
	ne.root, ne.reader = issue("root"), issue(etcdReaderUser)
	plain, err := FreePort()
	if err != nil {
		env.Fatalf("%v", err)
	}
	if ne.port, err = FreePort(); err != nil {
		env.Fatalf("%v", err)
	}
	etcd.URL = &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(plain))}
	args := etcd.Configure()
	args.Set("listen-client-urls", etcd.URL.String()+",https://0.0.0.0:"+strconv.Itoa(ne.port))
	args.Set("advertise-client-urls", ne.URL())
	args.Set("cert-file", ne.serving[0])
	args.Set("key-file", ne.serving[1])
	args.Set("trusted-ca-file", ne.ca.CertFile)
	args.Set("client-cert-auth", "true")
	a := api.Configure()
	a.Set("etcd-servers", ne.URL())
	a.Set("etcd-cafile", ne.root.CA)
	a.Set("etcd-certfile", ne.root.Cert)
	a.Set("etcd-keyfile", ne.root.Key)
	return ne
}

// URL is etcd's TLS client URL on the host.
func (ne *nodeEtcd) URL() string { return "https://127.0.0.1:" + strconv.Itoa(ne.port) }

// enableAuth creates root (kube-apiserver's user) and the read-only user
// and turns auth on, once the control plane runs.
func (ne *nodeEtcd) enableAuth(c *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	noPassword := &clientv3.UserAddOptions{NoPassword: true}
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user root", func() error { _, err := c.UserAddWithOptions(ctx, "root", "", noPassword); return err }},
		{"grant root", func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role registry-reader", func() error { _, err := c.RoleAdd(ctx, "registry-reader"); return err }},
		{"let registry-reader read /registry/", func() error {
			_, err := c.RoleGrantPermission(ctx, "registry-reader", "/registry/", clientv3.GetPrefixRangeEnd("/registry/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"add user " + etcdReaderUser, func() error { _, err := c.UserAddWithOptions(ctx, etcdReaderUser, "", noPassword); return err }},
		{"grant " + etcdReaderUser, func() error { _, err := c.UserGrantRole(ctx, etcdReaderUser, "registry-reader"); return err }},
		{"enable auth", func() error { _, err := c.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("etcd: %s: %w", s.what, err)
		}
	}
	return nil
}

// addServingIP issues etcd's serving certificate again, covering ip too
// (the node's bridge, where pods reach etcd). etcd reads its certificate
// files at every handshake, so no restart is needed.
func (ne *nodeEtcd) addServingIP(ip net.IP) error {
	crt, key, err := ne.ca.IssueServer(ne.dir, "etcd-server-node", ip)
	if err != nil {
		return err
	}
	// Key first: a handshake between the two renames would pair the new
	// key with the old certificate and fail, not succeed wrongly.
	if err := os.Rename(key, ne.serving[1]); err != nil {
		return err
	}
	return os.Rename(crt, ne.serving[0])
}

// tlsClient is a client of etcd's TLS listener as id.
func tlsClient(endpoint string, id *EtcdIdentity) (*clientv3.Client, error) {
	tc, err := transport.TLSInfo{CertFile: id.Cert, KeyFile: id.Key, TrustedCAFile: id.CA}.ClientConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 5 * time.Second})
}

// copyFiles copies each file (keys) to its destination (values), 0600.
func copyFiles(files map[string]string) error {
	for from, to := range files {
		b, err := os.ReadFile(from)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
