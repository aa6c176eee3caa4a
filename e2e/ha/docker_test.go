package ha

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
)

// testLabel marks everything this package creates in Docker; .ci/run
// removes what carries it. runLabel narrows the cleanup to this process,
// so a run never removes the containers of another one going on in
// parallel.
const (
	testLabel = "vaultkms.test"
	runLabel  = "vaultkms.test.run"
)

var runID = func() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}()

func labels() map[string]string { return map[string]string{testLabel: "1", runLabel: runID} }

// docker is the Docker engine the test drives.
type docker struct {
	cli *testcontainers.DockerClient
}

func newDocker(t *testing.T) *docker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		t.Fatalf("docker client: %v (this package needs a Docker engine)", err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		t.Fatalf("docker engine does not answer: %v (this package needs a Docker engine)", err)
	}
	t.Cleanup(func() { cli.Close() })
	return &docker{cli: cli}
}

// removeRun removes the containers and networks of this run, for when a
// test stopped before its own cleanups ran.
func removeRun(ctx context.Context) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	f := client.Filters{}.Add("label", runLabel+"="+runID)
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs.Items {
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			errs = append(errs, err)
		}
	}
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, n := range ns.Items {
		if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// image builds (once per content) an image holding the static binary bin
// under Dockerfile df, and returns its tag. The tag carries a hash of the
// Dockerfile and the binary, so a later run with the same inputs reuses
// the image instead of sending the binary to the engine again.
func (d *docker) image(t *testing.T, name, df, bin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dockerfile, err := os.ReadFile(df)
	if err != nil {
		t.Fatalf("read %s: %v", df, err)
	}
	h := sha256.New()
	h.Write(dockerfile)
	f, err := os.Open(bin)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		t.Fatalf("hash %s: %v", bin, err)
	}
	repo, tag := "vaultkms-ha/"+name, hex.EncodeToString(h.Sum(nil))[:20]
	ref := repo + ":" + tag
	if _, err := d.cli.ImageInspect(ctx, ref); err == nil {
		return ref
	}
	dir := t.TempDir()
	if err := linkOrCopy(bin, filepath.Join(dir, "app")); err != nil {
		t.Fatalf("build context for %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), dockerfile, 0o644); err != nil {
		t.Fatalf("build context for %s: %v", name, err)
	}
	prov, err := testcontainers.NewDockerProvider()
	if err != nil {
		t.Fatalf("docker provider: %v", err)
	}
	defer prov.Close()
	start := time.Now()
	req := &testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
		Context: dir, Dockerfile: "Dockerfile", Repo: repo, Tag: tag, KeepImage: true,
		BuildOptionsModifier: func(o *client.ImageBuildOptions) { o.Labels = map[string]string{testLabel: "1"} },
	}}
	if _, err := prov.BuildImage(ctx, req); err != nil {
		t.Fatalf("build image %s: %v", ref, err)
	}
	t.Logf("built image %s in %s", ref, time.Since(start).Round(100*time.Millisecond))
	return ref
}

func linkOrCopy(src, dst string) error {
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// goBuild builds one of vaultkms's commands, static, into dir.
func goBuild(t *testing.T, root, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// moduleRoot is the directory of vaultkms's go.mod above the test.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/vaultkms/vaultkms\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the vaultkms module root")
		}
		dir = parent
	}
}

// newNetwork creates a bridge network for one test, removed on cleanup.
func (d *docker) newNetwork(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := tcnetwork.New(ctx, tcnetwork.WithLabels(labels()))
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Remove(ctx); err != nil {
			t.Logf("remove network %s: %v", n.Name, err)
		}
	})
	return n.Name
}

// box is one running container of the topology.
type box struct {
	name    string // the network alias, such as vault-0
	network string
	c       *testcontainers.DockerContainer
	d       *docker
	removed bool
}

// remove removes the container before the test ends.
func (b *box) remove(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.c.Terminate(ctx); err != nil {
		t.Fatalf("remove %s: %v", b.name, err)
	}
	b.removed = true
}

// spec describes a container to start.
type spec struct {
	alias, image string
	cmd          []string
	ports        []string
	files        map[string][]byte // container path → content (mode 0644)
	binds        []string          // host:container
	tmpfs        []string
	env          map[string]string
}

// start creates and starts a container on network; it is removed on
// cleanup.
func (d *docker) start(t *testing.T, network string, s spec) *box {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req := testcontainers.ContainerRequest{
		Image:          s.image,
		Cmd:            s.cmd,
		Env:            s.env,
		ExposedPorts:   s.ports,
		Labels:         labels(),
		Networks:       []string{network},
		NetworkAliases: map[string][]string{network: {s.alias}},
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.Binds = append(hc.Binds, s.binds...)
			if len(s.tmpfs) > 0 {
				hc.Tmpfs = map[string]string{}
				for _, p := range s.tmpfs {
					hc.Tmpfs[p] = "rw"
				}
			}
		},
		ConfigModifier: func(c *container.Config) { c.Hostname = s.alias },
	}
	for p, content := range s.files {
		req.Files = append(req.Files, testcontainers.ContainerFile{Reader: strings.NewReader(string(content)), ContainerFilePath: p, FileMode: 0o644})
	}
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	b := &box{name: s.alias, network: network, d: d}
	if c != nil {
		b.c = c.(*testcontainers.DockerContainer)
		t.Cleanup(func() {
			if b.removed {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if t.Failed() {
				t.Logf("--- logs of %s (tail) ---\n%s", b.name, b.logs(ctx, 40))
			}
			if err := b.c.Terminate(ctx); err != nil {
				t.Logf("remove container %s: %v", b.name, err)
			}
		})
	}
	if err != nil {
		t.Fatalf("start %s: %v", s.alias, err)
	}
	return b
}

// addr is the host address of the container's port, such as
// 127.0.0.1:32771. It changes when the container is started again.
func (b *box) addr(t testing.TB, port string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := b.c.MappedPort(ctx, port)
	if err != nil {
		t.Fatalf("mapped port %s of %s: %v", port, b.name, err)
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(p.Num()))
}

// kill sends SIGKILL: the process dies without any chance to step down.
func (b *box) kill(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.d.cli.ContainerKill(ctx, b.c.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("kill %s: %v", b.name, err)
	}
	for ctx.Err() == nil {
		if st, err := b.c.State(ctx); err == nil && !st.Running {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s still running after SIGKILL", b.name)
}

// stop sends SIGTERM and waits (SIGKILL after grace).
func (b *box) stop(t testing.TB, grace time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), grace+30*time.Second)
	defer cancel()
	if err := b.c.Stop(ctx, &grace); err != nil {
		t.Fatalf("stop %s: %v", b.name, err)
	}
}

// startAgain starts a stopped container; its state (writable layer) is kept.
func (b *box) startAgain(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.c.Start(ctx); err != nil {
		t.Fatalf("start %s again: %v", b.name, err)
	}
}

func (b *box) running(ctx context.Context) bool {
	st, err := b.c.State(ctx)
	return err == nil && st.Running
}

// disconnect cuts the container off its network.
func (b *box) disconnect(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.d.cli.NetworkDisconnect(ctx, b.network, client.NetworkDisconnectOptions{Container: b.c.GetContainerID()}); err != nil {
		t.Fatalf("disconnect %s: %v", b.name, err)
	}
}

// reconnect attaches the container to its network again, under its alias.
func (b *box) reconnect(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.d.cli.NetworkConnect(ctx, b.network, client.NetworkConnectOptions{Container: b.c.GetContainerID(),
		EndpointConfig: &network.EndpointSettings{Aliases: []string{b.name}}}); err != nil {
		t.Fatalf("reconnect %s: %v", b.name, err)
	}
}

// startedAt is when the container's process last started; a restart
// changes it.
func (b *box) startedAt(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := b.c.State(ctx)
	if err != nil {
		t.Fatalf("state of %s: %v", b.name, err)
	}
	return st.StartedAt
}

// logs returns the last n lines of the container's output.
func (b *box) logs(ctx context.Context, n int) string {
	rc, err := b.c.Logs(ctx)
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	all, _ := io.ReadAll(rc)
	lines := strings.Split(strings.TrimRight(string(all), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
