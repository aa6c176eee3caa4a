package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protowire"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/etcdconn"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// auditorRules is all the Kubernetes RBAC vaultkms-auditor needs (the
// chart's auditor ClusterRole must match): its one EncryptionStatus and
// events about it. No Secrets, no list, no watch.
var auditorRules = []rbacv1.PolicyRule{
	{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"encryptionstatuses"}, Verbs: []string{"get", "create", "update"}},
	{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"encryptionstatuses/status"}, Verbs: []string{"update"}},
	{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
}

// startAuditor runs cmd/vaultkms-auditor as a user holding only
// auditorRules; it stops on cleanup and its log is printed if the test
// fails.
func startAuditor(t *testing.T, cp *harness.ControlPlane, args ...string) *harness.Controller {
	t.Helper()
	ctx := context.Background()
	name := "vaultkms-auditor"
	if _, err := cp.Client.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{}); err != nil {
		if _, err := cp.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: auditorRules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: name}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	user, err := cp.Env.ControlPlane.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "auditor.kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	a := harness.RunAuditor(t, kubeconfig, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("auditor log:\n%s", a.Log.String())
		}
	})
	return a
}

// storedKMS builds a value laid out as kube-apiserver stores a KMS v2
// object under keyID.
func storedKMS(keyID string) string {
	b := []byte("k8s:enc:kms:v2:vault:")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, 64))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, keyID)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("vault:v1:c2VlZA=="))
	return string(b)
}

// TestAuditorReadOnlyEtcd turns etcd's auth on with a root user and a role
// that may only read the /registry/ range. The auditor, holding that role
// and nothing more in Kubernetes than its EncryptionStatus, scans and
// publishes; the same identity cannot write to etcd or read outside the
// range.
func TestAuditorReadOnlyEtcd(t *testing.T) {
	t.Parallel()
	url := harness.StartEtcd(t)
	root := etcdClient(t, url)
	ctx := context.Background()
	kid1 := transitkey.NewKeyID("", "transit", "kms", 1, time.Unix(1764000000, 0)).String()
	kid2 := transitkey.NewKeyID("", "transit", "kms", 2, time.Unix(1764100000, 0)).String()
	for k, v := range map[string]string{
		"/registry/namespaces/default":   "k8s\x00ns",
		"/registry/secrets/default/a":    storedKMS(kid2),
		"/registry/secrets/default/b":    storedKMS(kid2),
		"/registry/secrets/default/old":  storedKMS(kid1),
		"/registry/configmaps/default/c": storedKMS(kid2),
		"/other/secret":                  "not for the auditor",
	} {
		if _, err := root.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	const rootPW, auditorPW = "root-pw-for-test", "auditor-pw-for-test"
	steps := []func() error{
		func() error { _, err := root.UserAdd(ctx, "root", rootPW); return err },
		func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := root.RoleAdd(ctx, "registry-reader"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "registry-reader", "/registry/", clientv3.GetPrefixRangeEnd("/registry/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := root.UserAdd(ctx, "vaultkms-auditor", auditorPW); return err },
		func() error { _, err := root.UserGrantRole(ctx, "vaultkms-auditor", "registry-reader"); return err },
		func() error { _, err := root.AuthEnable(ctx); return err },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("etcd auth setup step %d: %v", i, err)
		}
	}

	ro, err := etcdconn.Dial(ctx, etcdconn.Config{Endpoints: []string{url}, Username: "vaultkms-auditor", Password: auditorPW, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("dial as the read-only user: %v", err)
	}
	defer ro.Close()
	rep, err := scan.Run(ctx, ro, scan.Options{CurrentKeyID: kid2, Provider: "vault"})
	if err != nil {
		t.Fatalf("whole-prefix scan as the read-only user: %v", err)
	}
	if rep.Total() != 5 || rep.Stale() != 2 || rep.ByKeyID()[kid1] != 1 {
		t.Fatalf("scan as the read-only user: total %d stale %d by key %v", rep.Total(), rep.Stale(), rep.ByKeyID())
	}
	if _, err := ro.Put(ctx, "/registry/secrets/default/a", "x"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("write as the read-only user: %v, want permission denied", err)
	}
	if _, err := ro.Get(ctx, "/other/secret"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("read outside /registry/ as the read-only user: %v, want permission denied", err)
	}
	if _, err := etcdconn.Dial(ctx, etcdconn.Config{Endpoints: []string{url}, Username: "vaultkms-auditor", Password: "wrong", DialTimeout: 5 * time.Second}); err == nil {
		t.Fatal("a wrong etcd password was accepted")
	}

	// The auditor binary with the same identity publishes what it found.
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{CRDDirs: []string{harness.RepoPath(t, "charts/vaultkms/crds")}})
	pwFile := filepath.Join(t.TempDir(), "etcd-password")
	if err := os.WriteFile(pwFile, []byte(auditorPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startAuditor(t, cp, "--etcd-endpoints="+url, "--etcd-user=vaultkms-auditor", "--etcd-password-file="+pwFile,
		"--resources=secrets,configmaps", "--current-key-id="+kid2, "--scan-interval=5s")
	es := waitEncryptionStatus(t, cp, func(es *v1alpha1.EncryptionStatus) bool { return es.Status.Total == 4 })
	if es.Status.Stale != 1 || es.Status.Current != 3 || es.Status.RotationStage != "migrating" {
		t.Fatalf("EncryptionStatus from the read-only auditor: %+v", es.Status)
	}
}
