package ha

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/testcontainers/testcontainers-go/log"
	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/verifier/keysource"
)

// writesPerSecond is the load during faults, spread over both API
// servers; the issue asks for at least 20.
const writesPerSecond = 24

func TestMain(m *testing.M) {
	// The reaper image cannot be pulled here, and the default gateway
	// address does not route: the test removes its own containers (by
	// label) and reaches mapped ports on localhost.
	for k, v := range map[string]string{"TESTCONTAINERS_RYUK_DISABLED": "true", "TESTCONTAINERS_HOST_OVERRIDE": "localhost"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	log.SetDefault(quiet{})
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := removeRun(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "ha: removing this run's containers and networks: %v\n", err)
	}
	cancel()
	os.Exit(code)
}

// quiet drops testcontainers' progress lines; the test logs what matters.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// TestHA runs the control plane and its faults in order; each fault is a
// subtest that leaves the cluster whole again for the next.
func TestHA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ten containers; not in -short")
	}
	began := time.Now()
	c := startCluster(t)
	checkEncrypted(t, c)

	t.Run("ActiveVaultNodeStopped", func(t *testing.T) { activeVaultNodeStopped(t, c) })
	t.Run("PluginCutOffFromVault", func(t *testing.T) { pluginCutOff(t, c) })
	t.Run("EtcdMemberKilled", func(t *testing.T) { etcdMemberKilled(t, c) })
	t.Run("PluginRestarted", func(t *testing.T) { pluginRestarted(t, c) })
	t.Run("ControllerLeaderStopped", func(t *testing.T) { controllerLeaderStopped(t, c) })
	t.Logf("whole run: %s", time.Since(began).Round(time.Second))
}

// checkEncrypted writes a Secret through each API server and checks etcd
// holds it under the plugin's KMS v2 prefix.
func checkEncrypted(t *testing.T, c *cluster) {
	t.Helper()
	for i := range c.apis {
		w := createSecret(c, i, fmt.Sprintf("ha-check-%d", i))
		if w.err != nil {
			t.Fatalf("write through %s: %v", c.apis[i].name, w.err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + c.etcd[0].addr(t, "2379/tcp")}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := cli.Get(ctx, "/registry/secrets/"+namespace+"/"+w.name)
		cancel()
		cli.Close()
		if err != nil || len(r.Kvs) == 0 {
			t.Fatalf("etcd has no %s: %v", w.name, err)
		}
		if v := r.Kvs[0].Value; !bytes.HasPrefix(v, []byte("k8s:enc:kms:v2:"+provider+":")) || bytes.Contains(v, []byte(w.value)) {
			t.Fatalf("%s is not stored under KMS v2 %q: %.40q", w.name, provider, v)
		}
	}
}

// --- the active Vault node stopped ---

func activeVaultNodeStopped(t *testing.T, c *cluster) {
	active := c.activeVault(t)
	t.Logf("active Vault node: %s; the plugins are given %s", vaultAlias(active), c.vaultAddrs())

	plugins := make([]*monitor, len(c.apis))
	apis := make([]*monitor, len(c.apis))
	for i, a := range c.apis {
		plugins[i] = watch(250*time.Millisecond, func(context.Context) (bool, string) { return pluginReady(t, a.plugin) })
		apis[i] = watch(time.Second, a.kmsReady)
	}
	// Vault is back when a surviving node serves Transit again (a standby
	// forwards to the new active node).
	var survivors []*vaultapi.Client
	for i := range c.vault {
		if i != active {
			survivors = append(survivors, c.vaultClient(t, i, c.rootToken))
		}
	}
	vaultOK := watch(250*time.Millisecond, func(ctx context.Context) (bool, string) {
		for _, vc := range survivors {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := vc.Logical().WriteWithContext(ctx, "transit/encrypt/"+transitKey, map[string]any{"plaintext": "aGE="})
			cancel()
			if err != nil {
				return false, err.Error()
			}
		}
		return true, "ok"
	})
	defer func() {
		for _, m := range append(append(plugins, apis...), vaultOK) {
			m.stop()
		}
	}()

	l := startLoad(c, []int{0, 1}, writesPerSecond, "ha-vault")
	time.Sleep(5 * time.Second)
	killed := time.Now()
	c.vault[active].kill(t)
	t.Logf("killed %s (SIGKILL)", vaultAlias(active))

	vaultBack, vaultRecovered := vaultOK.waitFor(killed, true, 90*time.Second)
	pluginsRecovered := vaultRecovered
	deadline := time.Now().Add(60 * time.Second)
	for i, m := range plugins {
		if !vaultRecovered {
			break
		}
		if _, ok := m.waitFor(vaultBack, true, time.Until(deadline)); !ok {
			pluginsRecovered = false
			t.Errorf("plugin %s not ready within 60s of Vault's failover: %s (a plugin given one Vault address cannot leave a dead node; needs --vault-addr with several addresses)",
				c.apis[i].plugin.name, lastDetail(m.snapshot(), false))
		}
	}
	time.Sleep(5 * time.Second)
	ws := l.stop()
	s := summarize(ws, time.Since(l.began))
	t.Logf("writes across the fault: %s (%d ticks skipped, client saturated)", s, l.skipped.Load())
	// The fault is over when Vault serves again and each plugin is ready
	// after its last failed probe.
	if at, ok := recoveredAt(vaultOK.snapshot(), killed); ok {
		vaultBack = at
	}
	over := vaultBack
	for _, m := range plugins {
		if at, ok := recoveredAt(m.snapshot(), killed); ok && at.After(over) {
			over = at
		}
	}

	if !vaultRecovered {
		t.Errorf("no surviving Vault node served Transit within 90s of the kill: %s", lastDetail(vaultOK.snapshot(), false))
	} else {
		newActive := c.activeVault(t)
		t.Logf("Vault failover window: %s until a surviving node served Transit (new active node %s)", vaultBack.Sub(killed).Round(10*time.Millisecond), vaultAlias(newActive))
	}
	for i, m := range plugins {
		ss := m.snapshot()
		down, wasDown := firstAfter(ss, killed, false)
		if !wasDown {
			t.Logf("plugin %s: stayed ready throughout", c.apis[i].plugin.name)
			continue
		}
		if up, ok := firstAfter(ss, down, true); ok {
			t.Logf("plugin %s: not ready %s after the kill, ready again %s after it (%s down)", c.apis[i].plugin.name,
				down.Sub(killed).Round(10*time.Millisecond), up.Sub(killed).Round(10*time.Millisecond), up.Sub(down).Round(10*time.Millisecond))
		}
	}
	for i, m := range apis {
		ss := m.snapshot()
		t.Logf("%s /readyz/kms-providers failed during the fault: %v", c.apis[i].name, anyFalse(ss, killed, time.Now()))
	}
	if pluginsRecovered && vaultRecovered {
		// Writes may fail only inside the failover window.
		for _, w := range ws {
			if w.err != nil && (w.start.Before(killed) || w.start.After(over)) {
				t.Errorf("write %s failed outside the failover window (%s after the kill): %v", w.name, w.start.Sub(killed).Round(time.Millisecond), w.err)
			}
		}
	}
	if s.succeeded == 0 {
		t.Fatal("no write succeeded")
	}
	if pluginsRecovered {
		// Cross-server reads need Decrypt through the plugins, so they go
		// to Vault with the old active node still down.
		assertNothingLost(t, c, ws)
	}
	c.vault[active].startAgain(t)
	c.waitVaultAnswers(t, active, time.Minute)
	c.unseal(t, active)
	c.waitVoters(t, 3, 2*time.Minute)
	t.Logf("%s restarted, unsealed and a voter again", vaultAlias(active))
	if !pluginsRecovered {
		for _, a := range c.apis {
			if ok, detail := waitPluginReady(t, a.plugin, time.Minute); !ok {
				t.Fatalf("plugin %s not ready even with %s back: %s", a.plugin.name, vaultAlias(active), detail)
			}
		}
		assertNothingLost(t, c, ws)
	}
}

// --- one plugin cut off from Vault; a rotation while it lags ---

func pluginCutOff(t *testing.T, c *cluster) {
	a, b := c.apis[0], c.apis[1]
	for _, x := range c.apis {
		if ok, detail := x.readyz(context.Background(), "kms-providers"); !ok {
			t.Fatalf("%s kms-providers not ready before the fault: %s", x.name, detail)
		}
	}
	startedAt := b.plugin.startedAt(t)
	ready := []*monitor{
		watch(time.Second, a.kmsReady),
		watch(time.Second, b.kmsReady),
	}
	defer func() {
		for _, m := range ready {
			m.stop()
		}
	}()
	l := startLoad(c, []int{0, 1}, writesPerSecond, "ha-cut")
	time.Sleep(2 * time.Second)
	cut := time.Now()
	b.plugin.disconnect(t)
	reconnected := false
	defer func() {
		if !reconnected {
			b.plugin.reconnect(t)
		}
	}()
	t.Logf("disconnected %s from the network", b.plugin.name)

	failed, ok := ready[1].waitFor(cut, false, 60*time.Second)
	if !ok {
		t.Errorf("%s /readyz/kms-providers still passes 60s after its plugin lost Vault", b.name)
	} else {
		t.Logf("%s /readyz/kms-providers failed %s after the cut: %s", b.name, failed.Sub(cut).Round(10*time.Millisecond), lastDetail(ready[1].snapshot(), false))
		if failed.Sub(cut) > 30*time.Second {
			t.Errorf("%s /readyz/kms-providers took %s to fail; the bound is 30s", b.name, failed.Sub(cut).Round(time.Second))
		}
	}

	t.Run("RotationWhileOneLags", func(t *testing.T) { rotationWhileOneLags(t, c) })

	c.reconnectAndMeasure(t, b, ready[1], cut, &reconnected)
	if got := b.plugin.startedAt(t); got != startedAt {
		t.Errorf("%s was restarted (started %s, now %s); it must recover on its own", b.plugin.name, startedAt, got)
	}
	ws := l.stop()
	end := time.Now()
	t.Logf("writes across the cut: %s", summarize(ws, end.Sub(l.began)))
	var onA []write
	for _, w := range ws {
		if w.server == 0 {
			onA = append(onA, w)
		}
	}
	if sa := summarize(onA, end.Sub(l.began)); sa.failed > 0 {
		t.Errorf("%s, whose plugin kept Vault, failed %d of %d writes: %s", a.name, sa.failed, sa.attempted, sa.firstErr)
	}
	if anyFalse(ready[0].snapshot(), cut, end) {
		t.Errorf("%s /readyz/kms-providers failed while only the other plugin was cut off: %s", a.name, lastDetail(ready[0].snapshot(), false))
	}

	t.Run("RotationSeenByBoth", func(t *testing.T) { rotationSeenByBoth(t, c) })
	assertNothingLost(t, c, ws)
}

func (c *cluster) reconnectAndMeasure(t *testing.T, b *apiServer, ready *monitor, cut time.Time, reconnected *bool) {
	b.plugin.reconnect(t)
	*reconnected = true
	back := time.Now()
	t.Logf("reconnected %s after %s cut off", b.plugin.name, back.Sub(cut).Round(100*time.Millisecond))
	up, ok := ready.waitFor(back, true, 90*time.Second)
	if !ok {
		t.Errorf("%s /readyz/kms-providers did not recover within 90s of reconnecting: %s", b.name, lastDetail(ready.snapshot(), false))
		return
	}
	t.Logf("%s /readyz/kms-providers passed again %s after reconnecting (no restart)", b.name, up.Sub(back).Round(10*time.Millisecond))
}

// rotationWhileOneLags rotates the Transit key while the second plugin is
// cut off: the first API server moves to the new key_id, the second keeps
// the old one, and `kubectl vaultkms status` given both says so.
func rotationWhileOneLags(t *testing.T, c *cluster) {
	a, b := c.apis[0], c.apis[1]
	old := c.currentKeyID(t)
	vc := c.vaultClient(t, c.activeVault(t), c.rootToken)
	if _, err := vc.Logical().Write("transit/keys/"+transitKey+"/rotate", nil); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	rotated := time.Now()
	next := c.currentKeyID(t)
	if next == old {
		t.Fatalf("key_id unchanged by the rotation: %s", next)
	}
	t.Logf("rotated %s: %s -> %s", transitKey, old, next)
	at, ok := waitKeyID(a, next, 3*time.Minute)
	if !ok {
		t.Fatalf("%s does not report the new key_id within 3m", a.name)
	}
	t.Logf("%s reports the new key_id %s after the rotation", a.name, at.Sub(rotated).Round(100*time.Millisecond))
	bID, bHash, err := b.keyIDHash(context.Background())
	if err != nil {
		t.Fatalf("%s metrics: %v", b.name, err)
	}
	if bHash != keysource.HashKeyID(old) {
		t.Fatalf("%s, whose plugin is cut off, reports %s; want the old key_id's hash", b.name, bHash)
	}
	st := c.status(t)
	t.Logf("kubectl vaultkms status with both API servers: apiServersAgree=%v, stage %s, servers %+v", deref(st.APIServersAgree), st.Rotation.Stage, st.APIServers)
	if st.APIServersAgree == nil || *st.APIServersAgree {
		t.Errorf("status says the API servers agree while %s lags", b.name)
	}
	lagging := 0
	for _, s := range st.APIServers {
		if s.KeyIDHash != keysource.HashKeyID(next) {
			lagging++
			if s.APIServerIDHash != bID {
				t.Errorf("status names %s as lagging; the lagging one is %s (%s)", s.APIServerIDHash, b.name, bID)
			}
		}
	}
	if len(st.APIServers) != 2 || lagging != 1 {
		t.Errorf("status lists %d API servers with %d lagging; want 2 and 1", len(st.APIServers), lagging)
	}
}

// rotationSeenByBoth waits until the second API server, its plugin back on
// Vault, reports the new key_id too, and status says they agree.
func rotationSeenByBoth(t *testing.T, c *cluster) {
	next := c.currentKeyID(t)
	start := time.Now()
	for _, a := range c.apis {
		at, ok := waitKeyID(a, next, 3*time.Minute)
		if !ok {
			t.Fatalf("%s does not report the new key_id within 3m", a.name)
		}
		t.Logf("%s reports the new key_id (%s after the plugin came back)", a.name, at.Sub(start).Round(100*time.Millisecond))
	}
	st := c.status(t)
	if st.APIServersAgree == nil || !*st.APIServersAgree || len(st.APIServers) != 2 {
		t.Errorf("status after both moved: agree=%v with %d API servers; want true with 2", deref(st.APIServersAgree), len(st.APIServers))
	}
	// New writes on both land under the new key.
	for i := range c.apis {
		if w := createSecret(c, i, fmt.Sprintf("ha-rotated-%d", i)); w.err != nil {
			t.Errorf("write through %s after the rotation: %v", c.apis[i].name, w.err)
		}
	}
}

// waitKeyID polls an API server's metrics until it reports keyID; polling
// its kms-providers readiness meanwhile makes it ask the plugin's Status
// more often than its one-minute poll.
func waitKeyID(a *apiServer, keyID string, timeout time.Duration) (time.Time, bool) {
	want := keysource.HashKeyID(keyID)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		a.readyz(context.Background(), "kms-providers")
		if _, h, err := a.keyIDHash(context.Background()); err == nil && h == want {
			return time.Now(), true
		}
		time.Sleep(time.Second)
	}
	return time.Time{}, false
}

type statusJSON struct {
	CurrentKeyID    string                   `json:"currentKeyID"`
	APIServers      []keysource.APIServerKey `json:"apiServers"`
	APIServersAgree *bool                    `json:"apiServersAgree"`
	Rotation        struct {
		Stage string `json:"stage"`
	} `json:"rotation"`
}

// status runs `kubectl-vaultkms status` against the first API server's
// kubeconfig plus the second's /metrics URL.
func (c *cluster) status(t *testing.T) statusJSON {
	t.Helper()
	args := []string{"status",
		"--kubeconfig", filepath.Join(c.dir, "kubeconfig"),
		// The list names every API server; status reads each one's metrics.
		"--apiserver-metrics-url", c.apis[0].rest.Host + "/metrics," + c.apis[1].rest.Host + "/metrics",
		"--etcd-endpoints", "http://" + c.etcd[c.etcdLeader(t)].addr(t, "2379/tcp"),
		"--vault-addr", "https://" + c.vault[c.activeVault(t)].addr(t, "8200/tcp"),
		"--vault-ca-cert", c.caFile, "--transit-key", transitKey, "--vault-token-file", c.rootTokenFile,
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(c.kubectlVaultkms, append(args, "-o", "json")...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Exit 3 means "action needed" (a rotation not finished yet), which is
	// what these scenarios set up; anything else is a failure.
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("kubectl-vaultkms status: %v\n%s%s", err, out.String(), errb.String())
		}
	}
	var st statusJSON
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("status output: %v\n%s", err, out.String())
	}
	table, _ := exec.Command(c.kubectlVaultkms, args...).CombinedOutput()
	t.Logf("kubectl vaultkms status:\n%s", strings.TrimRight(string(table), "\n"))
	return st
}

func deref(b *bool) string {
	if b == nil {
		return "unknown"
	}
	return fmt.Sprint(*b)
}

// --- one etcd member killed ---

func etcdMemberKilled(t *testing.T, c *cluster) {
	leader := c.etcdLeader(t)
	l := startLoad(c, []int{0, 1}, writesPerSecond, "ha-etcd")
	time.Sleep(4 * time.Second)
	killed := time.Now()
	c.etcd[leader].kill(t)
	t.Logf("killed etcd leader %s (SIGKILL)", etcdAlias(leader))
	time.Sleep(10 * time.Second)
	c.etcd[leader].startAgain(t)
	c.waitEtcd(t, leader, time.Minute)
	t.Logf("%s back and healthy %s after the kill", etcdAlias(leader), time.Since(killed).Round(100*time.Millisecond))
	time.Sleep(3 * time.Second)
	ws := l.stop()
	s := summarize(ws, time.Since(l.began))
	t.Logf("writes across the etcd leader's loss: %s", s)
	if s.succeeded == 0 {
		t.Fatal("no write succeeded")
	}
	assertNothingLost(t, c, ws)
}

// --- the plugin container restarted ---

func pluginRestarted(t *testing.T, c *cluster) {
	a := c.apis[0]
	var existing []write
	for i := range 20 {
		w := createSecret(c, 0, fmt.Sprintf("ha-restart-existing-%02d", i))
		if w.err != nil {
			t.Fatalf("write before the restart: %v", w.err)
		}
		existing = append(existing, w)
	}
	if _, problems := readBack(t, c, existing); len(problems) > 0 {
		t.Fatalf("before the restart: %s", problems[0])
	}
	ready := watch(time.Second, a.kmsReady)
	defer ready.stop()

	stopped := time.Now()
	a.plugin.stop(t, 10*time.Second)
	t.Logf("stopped %s (SIGTERM) in %s", a.plugin.name, time.Since(stopped).Round(10*time.Millisecond))
	var reads, readFailures int
	var downWrites []write
	for i := 0; time.Since(stopped) < 12*time.Second; i++ {
		e := existing[rand.IntN(len(existing))]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := a.client.CoreV1().Secrets(namespace).Get(ctx, e.name, metav1.GetOptions{})
		cancel()
		reads++
		if err != nil || string(s.Data["v"]) != e.value {
			readFailures++
			if readFailures == 1 {
				t.Errorf("reading %s through %s while its plugin is down: %v", e.name, a.name, err)
			}
		}
		downWrites = append(downWrites, createSecret(c, 0, fmt.Sprintf("ha-restart-down-%03d", i)))
		time.Sleep(250 * time.Millisecond)
	}
	ds := summarize(downWrites, time.Since(stopped))
	t.Logf("while %s was down (12s): %d reads of existing Secrets, %d failed; writes: %s; kms-providers failed: %v",
		a.plugin.name, reads, readFailures, ds, anyFalse(ready.snapshot(), stopped, time.Now()))

	started := time.Now()
	a.plugin.startAgain(t)
	if ok, detail := waitPluginReady(t, a.plugin, time.Minute); !ok {
		t.Fatalf("%s not ready after its restart: %s", a.plugin.name, detail)
	}
	up, ok := ready.waitFor(started, true, 2*time.Minute)
	if !ok {
		t.Fatalf("%s /readyz/kms-providers not back within 2m of the plugin's restart: %s", a.name, lastDetail(ready.snapshot(), false))
	}
	t.Logf("%s /readyz/kms-providers passes %s after the plugin started again", a.name, up.Sub(started).Round(10*time.Millisecond))
	// New writes resume: the first one that succeeds, then ten in a row.
	deadline := time.Now().Add(2 * time.Minute)
	var after []write
	for i := 0; ; i++ {
		w := createSecret(c, 0, fmt.Sprintf("ha-restart-after-%03d", i))
		if w.err == nil {
			t.Logf("first write after the restart succeeded %s after the plugin started", w.end.Sub(started).Round(10*time.Millisecond))
			after = append(after, w)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes through %s do not resume within 2m of the plugin's restart: %v", a.name, w.err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for i := range 10 {
		w := createSecret(c, 0, fmt.Sprintf("ha-restart-more-%02d", i))
		if w.err != nil {
			t.Errorf("write after the restart: %v", w.err)
		}
		after = append(after, w)
	}
	assertNothingLost(t, c, append(append(existing, downWrites...), after...))
}
