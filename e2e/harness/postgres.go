package harness

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	// The database/sql driver "pgx", for checking credentials Vault issues.
	_ "github.com/jackc/pgx/v5/stdlib"
)

// Postgres is a PostgreSQL server of the test's own, from the Debian
// package, with password authentication on loopback TCP.
type Postgres struct {
	Port     int
	Password string // of the superuser "postgres"
	Dir      string
}

// pgBin finds a PostgreSQL server program.
func pgBin(env Env, name string) string {
	env.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) == 0 {
		env.Fatalf("%s not found: install PostgreSQL (apt-get install postgresql)", name)
	}
	return matches[len(matches)-1]
}

// StartPostgres initialises and starts a cluster in a temp dir. initdb
// refuses to run as root, so as root the server runs as the postgres user.
func StartPostgres(env Env) *Postgres {
	env.Helper()
	dir, err := os.MkdirTemp("", "vaultkms-pg")
	if err != nil {
		env.Fatalf("%v", err)
	}
	env.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			env.Fatalf("running as root needs the postgres user (apt-get install postgresql): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			env.Fatalf("%v", err)
		}
	}
	pg := &Postgres{Dir: dir, Password: "pg-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(pg.Password), 0o600); err != nil {
		env.Fatalf("%v", err)
	}
	if cred != nil {
		os.Chown(pwfile, int(cred.Uid), int(cred.Gid))
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(pgBin(env, name), args...)
		cmd.SysProcAttr = KillWithParent(&syscall.SysProcAttr{Credential: cred, Setpgid: true})
		cmd.Dir = dir
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", "postgres", "--pwfile="+pwfile, "--auth-host=scram-sha-256", "--auth-local=trust").CombinedOutput(); err != nil {
		env.Fatalf("initdb: %v\n%s", err, out)
	}
	if pg.Port, err = FreePort(); err != nil {
		env.Fatalf("%v", err)
	}
	srv := run("postgres", "-D", data, "-p", strconv.Itoa(pg.Port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	logf, _ := os.Create(filepath.Join(dir, "postgres.log"))
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		env.Fatalf("start postgres: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); logf.Close(); close(done) }()
	env.Cleanup(func() {
		srv.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := pg.Ping("postgres", pg.Password); err == nil {
			return pg
		} else if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			env.Fatalf("postgres did not accept connections: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URL is a connection URL for Vault's database engine, with templated
// credentials.
func (pg *Postgres) URL() string {
	return fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", pg.Port)
}

// Ping logs in as user with password over TCP and runs a query.
func (pg *Postgres) Ping(user, password string) error {
	return pg.Query(user, password, "SELECT 1", nil)
}

// Query runs a query as user and scans one row into dest (if not nil).
func (pg *Postgres) Query(user, password, q string, dest any, args ...any) error {
	db, err := sql.Open("pgx", fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", user, password, pg.Port))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	row := db.QueryRowContext(ctx, q, args...)
	if dest == nil {
		var x any
		return row.Scan(&x)
	}
	return row.Scan(dest)
}
