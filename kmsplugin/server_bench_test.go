package kmsplugin

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v2"
)

// BenchmarkServedCall measures what the plugin adds to one lone call on
// top of its Vault request: the gRPC hop over the unix socket, the batcher
// and the plugin's own checks, with a Transit stand-in that answers at
// once. Its ns/op is the floor of a lone caller's latency over a direct
// Transit client's.
func BenchmarkServedCall(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &stubTransit{info: keyInfo(1)}
	p := New(Config{Mount: "transit", Key: "kms", RefreshInterval: time.Hour}, tr, nil, nil, nil, logr.Discard())
	p.refresh(ctx)
	sock := filepath.Join(b.TempDir(), "kms.sock")
	lis, err := ListenUnix(sock, 0o600, -1)
	if err != nil {
		b.Fatal(err)
	}
	go Serve(ctx, lis, p, time.Second) //nolint:errcheck // ends with ctx
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := kmsapi.NewKeyManagementServiceClient(conn)
	enc, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encrypt", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decrypt", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
