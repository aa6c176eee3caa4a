package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// kmsCost is what one encryption mode cost the same kube-apiserver and
// etcd.
type kmsCost struct {
	create, list, restart time.Duration
	// seeds is how many distinct wrapped DEK seeds etcd held when the API
	// server was restarted for the cold read (0 without KMS).
	seeds int
}

// benchKMSCost measures what encrypting Secrets costs kube-apiserver with
// identity (none), aesgcm (a local key) and vaultkms (KMS v2), each on a
// fresh etcd and API server of its own: n Secrets created by 16 writers
// and listed; then, after the API server was started seeds times in all
// with a Secret written after each start (each start wraps a new DEK
// seed, so etcd holds seeds distinct seeds under KMS), one more restart
// timed until a list returns every Secret: a cold DEK cache, one Decrypt
// per seed.
func benchKMSCost(env *harness.Main, n, seeds int) {
	v := harness.StartVault(env)
	v.TransitKey("transit", "kms")
	p := harness.StartPlugin(env, v, harness.PluginOptions{Key: "kms"})
	p.WaitKeyID(env, 20*time.Second)

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		env.Fatalf("aesgcm key: %v", err)
	}
	modes := []struct{ name, config string }{
		{"identity", costConfig("      - identity: {}\n")},
		{"aesgcm", costConfig(fmt.Sprintf("      - aesgcm:\n          keys:\n            - name: key1\n              secret: %s\n      - identity: {}\n", base64.StdEncoding.EncodeToString(key)))},
		{"vaultkms (KMS v2)", harness.KMSEncryptionConfig("vault", p.Socket)},
	}
	results := make([]kmsCost, len(modes))
	for i, m := range modes {
		results[i] = kmsCostRun(env, m.config, n, seeds)
	}
	base := results[1]
	fmt.Printf("\nWhat encryption at rest costs kube-apiserver: %d Secrets from %d writers, then a restart with %d DEK seeds in etcd\n", n, writers, seeds)
	fmt.Printf("(each mode on its own fresh etcd and API server, one after the other; ratios against aesgcm)\n\n")
	fmt.Printf("%-18s %10s %7s %10s %7s %12s %7s %6s\n", "mode", "create", "ratio", "list", "ratio", "cold restart", "ratio", "seeds")
	for i, m := range modes {
		r := results[i]
		fmt.Printf("%-18s %9.2fs %6.2fx %9.3fs %6.2fx %11.2fs %6.2fx %6d\n", m.name,
			r.create.Seconds(), r.create.Seconds()/base.create.Seconds(),
			r.list.Seconds(), r.list.Seconds()/base.list.Seconds(),
			r.restart.Seconds(), r.restart.Seconds()/base.restart.Seconds(), r.seeds)
	}
	fmt.Printf("\ncold restart = stop kube-apiserver, start it, and list every Secret through it\n")
	fmt.Printf("targets: vaultkms create and list within 1.05x of aesgcm; the cold restart within 1.2x of aesgcm's\n")
}

func costConfig(providers string) string {
	return "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n" + providers
}

func kmsCostRun(env *harness.Main, config string, n, seeds int) kmsCost {
	cp := harness.StartControlPlane(env, harness.ControlPlaneOptions{EncryptionConfig: config})
	// The next mode measures an API server of its own: this one stops
	// (the cleanup's second stop only logs).
	defer func() {
		if err := cp.Env.Stop(); err != nil {
			env.Logf("stop control plane: %v", err)
		}
	}()
	ctx := context.Background()
	kube, err := kubernetes.NewForConfig(unthrottled(cp.Config))
	if err != nil {
		env.Fatalf("client: %v", err)
	}
	var r kmsCost
	data := map[string][]byte{"v": []byte(strings.Repeat("x", 64))}
	start := time.Now()
	if err := inParallel(0, n, func(i int) error {
		_, err := kube.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%06d", i)}, Data: data}, metav1.CreateOptions{})
		return err
	}); err != nil {
		env.Fatalf("create secrets: %v", err)
	}
	r.create = time.Since(start)
	start = time.Now()
	list, err := kube.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
	r.list = time.Since(start)
	if err != nil || len(list.Items) < n {
		env.Fatalf("list secrets: %d of %d, %v", len(list.Items), n, err)
	}
	// One start has happened; each further one wraps a new seed, used by
	// the Secret written right after it.
	for i := 1; i < seeds; i++ {
		cp.RestartAPIServer()
		if _, err := kube.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("seed-%03d", i)}, Data: data}, metav1.CreateOptions{}); err != nil {
			env.Fatalf("create a Secret after start %d: %v", i+1, err)
		}
	}
	r.seeds = countSeeds(env, cp)
	want := n + seeds - 1
	start = time.Now()
	cp.RestartAPIServer()
	list, err = kube.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
	r.restart = time.Since(start)
	if err != nil || len(list.Items) < want {
		env.Fatalf("list secrets after the cold restart: %d of %d, %v", len(list.Items), want, err)
	}
	return r
}

// countSeeds counts the distinct wrapped DEK seeds of the KMS v2 Secrets
// in etcd (field 3 of the EncryptedObject), by hash.
func countSeeds(env *harness.Main, cp *harness.ControlPlane) int {
	resp, err := cp.Etcd().Get(context.Background(), "/registry/secrets/", clientv3.WithPrefix())
	if err != nil {
		env.Fatalf("read secrets from etcd: %v", err)
	}
	seen := map[[32]byte]bool{}
	for _, kv := range resp.Kvs {
		if !strings.HasPrefix(string(kv.Value), "k8s:enc:kms:v2:") {
			continue
		}
		rest := kv.Value[len("k8s:enc:kms:v2:"):]
		i := strings.IndexByte(string(rest), ':')
		if i < 0 {
			continue
		}
		b := rest[i+1:]
		for len(b) > 0 {
			num, typ, m := protowire.ConsumeTag(b)
			if m < 0 {
				break
			}
			b = b[m:]
			m = protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				break
			}
			if num == 3 && typ == protowire.BytesType {
				s, _ := protowire.ConsumeBytes(b)
				seen[sha256.Sum256(s)] = true
			}
			b = b[m:]
		}
	}
	return len(seen)
}
