package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// setupDatabase points Vault's database engine at pg with a role "app"
// whose leases last defaultTTL, at most maxTTL, and a policy "db-creds"
// allowing namespace ns's tenant to read, renew and revoke its own leases.
func setupDatabase(t *testing.T, s *syncerStack, pg *harness.Postgres, defaultTTL, maxTTL string) {
	t.Helper()
	databaseOn(s.v, pg, defaultTTL, maxTTL)
}

// databaseOn mounts the database engine on v, on pg, with the role app
// and the policy db-creds that reads, renews and revokes its credentials.
func databaseOn(v *harness.Vault, pg *harness.Postgres, defaultTTL, maxTTL string) {
	v.Enable("database", "database")
	v.Write("database/config/pg", map[string]any{
		"plugin_name": "postgresql-database-plugin", "connection_url": pg.URL(),
		"username": "postgres", "password": pg.Password, "allowed_roles": "app",
	})
	v.Write("database/roles/app", map[string]any{
		"db_name":             "pg",
		"creation_statements": `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
		"default_ttl":         defaultTTL, "max_ttl": maxTTL,
	})
	v.Policy("db-creds", `
path "database/creds/app"                    { capabilities = ["read"] }
path "sys/leases/renew/database/creds/app/*"  { capabilities = ["update"] }
path "sys/leases/revoke/database/creds/app/*" { capabilities = ["update"] }
`)
}

func roleExists(t *testing.T, pg *harness.Postgres, name string) bool {
	t.Helper()
	var n int
	if err := pg.Query("postgres", pg.Password, "SELECT count(*) FROM pg_roles WHERE rolname = $1", &n, name); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestVaultSecretLeaseOutlivesNoToken: Vault revokes a lease when the token
// that created it ends. With tokens that live 30 s at most, leases of
// minutes, and a controller restart that loses every token, a client that
// logs in to PostgreSQL every second with whatever the Secret holds never
// fails.
func TestVaultSecretLeaseOutlivesNoToken(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t)
	setupDatabase(t, s, pg, "3m", "10m")
	s.role("db", "app", "db-creds", map[string]any{"token_ttl": "20s", "token_max_ttl": "30s"})
	if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db, namespace: app}
spec:
  auth: {kubernetes: {role: db, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10m
`); err != nil {
		t.Fatal(err)
	}
	s.waitSecret(t, "app", "db", 30*time.Second, func(sec *corev1.Secret) bool { return len(sec.Data["username"]) > 0 })
	vs := s.waitReady(t, "app", "db", metav1.ConditionTrue, "Synced", 10*time.Second)
	l := vs.Status.Lease
	if l.TokenAccessor == "" || l.TokenExpiresAt == nil || !l.TokenExpiresAt.Before(&l.ExpiresAt) {
		t.Fatalf("status does not record the creating token's end before the lease's: %+v", l)
	}
	if !vs.Status.ExpiresAt.Equal(l.TokenExpiresAt) {
		t.Fatalf("status.expiresAt %s, want the token's end %s", vs.Status.ExpiresAt, l.TokenExpiresAt)
	}

	var (
		mu       sync.Mutex
		logins   int
		failures []string
		users    = map[string]bool{}
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			sec, err := s.secret("app", "db")
			if err != nil {
				mu.Lock()
				failures = append(failures, "no Secret: "+err.Error())
				mu.Unlock()
				continue
			}
			user := string(sec.Data["username"])
			err = pg.Ping(user, string(sec.Data["password"]))
			mu.Lock()
			logins++
			users[user] = true
			if err != nil {
				failures = append(failures, time.Now().Format("15:04:05")+" "+user+": "+err.Error())
			}
			mu.Unlock()
		}
	}()
	time.Sleep(20 * time.Second)
	s.restartController(t)
	time.Sleep(70 * time.Second)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d logins with the Secret's credentials over 90 s, %d distinct users, %d failures", logins, len(users), len(failures))
	if len(failures) > 0 {
		t.Fatalf("logins failed with the Secret's current credentials:\n%s", strings.Join(failures, "\n"))
	}
	if len(users) < 3 {
		t.Fatalf("only %d sets of credentials in 90 s with 30 s tokens: not re-issued before the token's end", len(users))
	}
	if strings.Contains(s.oldLogs+s.log.String(), s.v.RootToken) {
		t.Fatal("a token appeared in the log")
	}
}

// TestVaultSecretNamespaceDeletion: deleting a namespace never hangs on a
// VaultSecret's finalizer, even after a restart has lost the tenant's
// token and the Terminating namespace refuses new tokens; with the token
// still held, the lease is revoked.
func TestVaultSecretNamespaceDeletion(t *testing.T) {
	t.Parallel()
	pg := harness.StartPostgres(t)
	s := startSyncerStack(t, stackOptions{controllers: []string{"namespace"}})
	ctx := context.Background()
	setupDatabase(t, s, pg, "5m", "10m")
	kube := kubernetes.NewForConfigOrDie(s.cp.Config)
	users := map[string]string{}
	for _, ns := range []string{"gone-after-restart", "gone-with-token"} {
		s.cp.Namespace(ns, "app")
		s.role("db-"+ns, ns, "db-creds", nil)
		if _, err := s.apply(t, `
apiVersion: secrets.vaultkms.io/v1alpha1
kind: VaultSecret
metadata: {name: db, namespace: `+ns+`}
spec:
  auth: {kubernetes: {role: db-`+ns+`, serviceAccountName: app}}
  source: {dynamic: {mount: database, path: creds/app}}
  ttl: 10m
`); err != nil {
			t.Fatal(err)
		}
		sec := s.waitSecret(t, ns, "db", 30*time.Second, func(sec *corev1.Secret) bool { return len(sec.Data["username"]) > 0 })
		users[ns] = string(sec.Data["username"])
	}
	waitNamespaceGone := func(ns string) time.Duration {
		start := time.Now()
		if err := kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		for {
			_, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return time.Since(start)
			}
			if time.Since(start) > 60*time.Second {
				t.Fatalf("namespace %s still exists 60 s after deletion", ns)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	// The controller still holds the tenant's token: the lease is revoked.
	took := waitNamespaceGone("gone-with-token")
	t.Logf("namespace with the token held: gone in %s", took.Round(100*time.Millisecond))
	if roleExists(t, pg, users["gone-with-token"]) {
		t.Fatalf("database user of the deleted namespace still exists: lease not revoked")
	}

	s.restartController(t)
	time.Sleep(3 * time.Second) // the new process is up and has synced its cache
	took = waitNamespaceGone("gone-after-restart")
	t.Logf("namespace after a restart: gone in %s", took.Round(100*time.Millisecond))
}
