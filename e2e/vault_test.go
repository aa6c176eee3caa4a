package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
)

const (
	mount = "transit"
	key   = "kms"
)

// roundTrip wraps a seed through the plugin, checks the key_id agrees with
// Status, unwraps it again and returns the key_id.
func roundTrip(t *testing.T, c kmsapi.KeyManagementServiceClient, seed string) string {
	t.Helper()
	// Long enough that finding it inside base64 ciphertext means a leak.
	seed = "seed-material-" + seed
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &kmsapi.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Healthz != "ok" || st.Version != "v2" {
		t.Fatalf("Status = %+v", st)
	}
	enc, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte(seed), Uid: "t"})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if enc.KeyId != st.KeyId {
		t.Fatalf("Encrypt key_id %q != Status key_id %q", enc.KeyId, st.KeyId)
	}
	if strings.Contains(string(enc.Ciphertext), seed) || !strings.HasPrefix(string(enc.Ciphertext), "vault:v") {
		t.Fatalf("ciphertext does not look wrapped: %q", enc.Ciphertext)
	}
	if len(enc.Ciphertext) > 1024 || len(enc.KeyId) > 1024 {
		t.Fatalf("ciphertext %d bytes, key_id %d bytes: kube-apiserver allows 1 KiB", len(enc.Ciphertext), len(enc.KeyId))
	}
	dec, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Uid: "t", Annotations: enc.Annotations})
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if string(dec.Plaintext) != seed {
		t.Fatalf("Decrypt returned other bytes than were encrypted")
	}
	return enc.KeyId
}

// pluginPolicy gives an auth method's tokens exactly the plugin's policy.
func pluginPolicy(v *harness.Vault) {
	v.Policy("kms-plugin", harness.PluginPolicy(mount, key))
}

func TestAuthMethods(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	pluginPolicy(v)

	t.Run("token file", func(t *testing.T) {
		tok := v.Write("auth/token/create", map[string]any{"policies": []string{"kms-plugin"}, "ttl": "1h"}).Auth.ClientToken
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: vault.TokenFile{Path: harness.TokenFile(t, tok)}})
		p.WaitKeyID(t, 20*time.Second)
		id := roundTrip(t, p.Client(t), "seed-token")
		if _, err := transitkey.ParseKeyID(id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("approle", func(t *testing.T) {
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: appRole(t, v, "1h", "")})
		p.WaitKeyID(t, 20*time.Second)
		roundTrip(t, p.Client(t), "seed-approle")
	})

	t.Run("cert", func(t *testing.T) {
		dir := t.TempDir()
		ca, err := harness.NewCA(dir, "clients")
		if err != nil {
			t.Fatal(err)
		}
		crt, k, err := ca.Issue(dir, "kms-plugin", false)
		if err != nil {
			t.Fatal(err)
		}
		v.EnableAuth("cert", "cert")
		v.Write("auth/cert/certs/kms", map[string]any{"certificate": string(ca.CertPEM), "token_policies": "kms-plugin", "token_ttl": "1h"})
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: vault.Cert{Role: "kms"}, ClientCert: crt, ClientKey: k})
		p.WaitKeyID(t, 20*time.Second)
		roundTrip(t, p.Client(t), "seed-cert")
	})

	t.Run("jwt", func(t *testing.T) {
		iss, err := harness.NewJWTIssuer()
		if err != nil {
			t.Fatal(err)
		}
		v.EnableAuth("jwt", "jwt")
		v.Write("auth/jwt/config", map[string]any{"jwt_validation_pubkeys": []string{iss.PublicKeyPEM}})
		v.Write("auth/jwt/role/kms", map[string]any{
			"role_type": "jwt", "user_claim": "sub", "bound_audiences": []string{"vault"},
			"token_policies": "kms-plugin", "token_ttl": "1h",
		})
		jwt, err := iss.Sign("kms-plugin", "vault", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "jwt")
		write(t, f, jwt)
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: vault.JWT{Method: "jwt", Role: "kms", Token: vault.JWTFile(f)}})
		p.WaitKeyID(t, 20*time.Second)
		roundTrip(t, p.Client(t), "seed-jwt")
	})

	t.Run("least privilege policy is enough and needed", func(t *testing.T) {
		tok := v.Write("auth/token/create", map[string]any{"policies": []string{"default"}, "ttl": "1h"}).Auth.ClientToken
		p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: vault.TokenFile{Path: harness.TokenFile(t, tok)}, RefreshInterval: 200 * time.Millisecond})
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(p.Plugin.Health(), "403") {
			if time.Now().After(deadline) {
				t.Fatalf("health %q should report the refusal", p.Plugin.Health())
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestShortLivedTokenIsRenewedAndReplaced(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	pluginPolicy(v)
	// A token lives 2s and can be renewed up to 6s in total.
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, RefreshInterval: 500 * time.Millisecond, Method: appRole(t, v, "2s", "6s")})
	p.WaitKeyID(t, 20*time.Second)
	c := p.Client(t)
	first := p.Session.Client().Token()
	// Keep working for well past the maximum lifetime of any one token.
	end := time.Now().Add(14 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		roundTrip(t, c, "seed")
		time.Sleep(250 * time.Millisecond)
	}
	logins := strings.Count(p.Log.String(), "vault login succeeded")
	if logins < 2 {
		t.Fatalf("%d logins in 14s with a 6s max TTL: the token was not replaced\n%s", logins, p.Log.String())
	}
	if p.Session.Client().Token() == first {
		t.Fatal("still using the first token after its max TTL")
	}
	if !strings.Contains(p.Log.String(), "maximum lifetime") && !strings.Contains(p.Log.String(), "renewal stopped") {
		t.Fatalf("no renewal ended in the log:\n%s", p.Log.String())
	}
	if strings.Contains(p.Log.String(), first) {
		t.Fatal("a token appeared in the plugin's log")
	}
}

func TestRevokedTokenIsReplacedWithoutFailingCalls(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	pluginPolicy(v)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: appRole(t, v, "1h", "")})
	p.WaitKeyID(t, 20*time.Second)
	c := p.Client(t)
	roundTrip(t, c, "before")
	old := p.Session.Client().Token()
	if err := v.Client().Auth().Token().RevokeTree(old); err != nil {
		t.Fatal(err)
	}
	// The next call meets a 403, logs in again and succeeds.
	roundTrip(t, c, "after")
	if p.Session.Client().Token() == old {
		t.Fatal("the revoked token is still in use")
	}
}

func TestChangedTokenFileIsReread(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	pluginPolicy(v)
	tokA := v.Write("auth/token/create", map[string]any{"policies": []string{"kms-plugin"}, "ttl": "1h"}).Auth.ClientToken
	tokB := v.Write("auth/token/create", map[string]any{"policies": []string{"kms-plugin"}, "ttl": "1h"}).Auth.ClientToken
	file := harness.TokenFile(t, tokA)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, Method: vault.TokenFile{Path: file}, FilePoll: 100 * time.Millisecond})
	p.WaitKeyID(t, 20*time.Second)
	roundTrip(t, p.Client(t), "a")
	// Replace the file the way Vault Agent does: write then rename.
	write(t, file+".new", tokB)
	if err := os.Rename(file+".new", file); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Session.Client().Token() != tokB {
		if time.Now().After(deadline) {
			t.Fatalf("token file change not picked up:\n%s", p.Log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	v.Client().Auth().Token().RevokeTree(tokA)
	roundTrip(t, p.Client(t), "b")
}

func TestVaultDownSealedAndBack(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, RefreshInterval: 300 * time.Millisecond})
	p.WaitKeyID(t, 20*time.Second)
	c := p.Client(t)
	roundTrip(t, c, "before")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	enc, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("kept")})
	if err != nil {
		t.Fatal(err)
	}

	expectDown := func(t *testing.T, want string) {
		t.Helper()
		callCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Encrypt(callCtx, &kmsapi.EncryptRequest{Plaintext: []byte("x")})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Encrypt with Vault %s: %v, want Unavailable", want, err)
		}
		_, err = c.Decrypt(callCtx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Decrypt with Vault %s: %v, want Unavailable", want, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := c.Status(context.Background(), &kmsapi.StatusRequest{})
			if err != nil {
				t.Fatalf("Status must answer from memory while Vault is %s: %v", want, err)
			}
			if st.Healthz != "ok" && strings.Contains(strings.ToLower(st.Healthz), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("healthz %q does not say %q", st.Healthz, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitHealthy := func(t *testing.T) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for p.Plugin.Health() != "ok" {
			if time.Now().After(deadline) {
				t.Fatalf("plugin did not recover: %s", p.Plugin.Health())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	v.Stop()
	expectDown(t, "connect")
	v.Start() // sealed after a restart
	expectDown(t, "sealed")
	v.Unseal()
	waitHealthy(t)
	roundTrip(t, c, "after")
	dec, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId})
	if err != nil || string(dec.Plaintext) != "kept" {
		t.Fatalf("seed wrapped before the outage: %v", err)
	}
	v.Seal()
	expectDown(t, "sealed")
	v.Unseal()
	waitHealthy(t)
	roundTrip(t, c, "again")
}

func TestRotationAndRetiredVersions(t *testing.T) {
	t.Parallel()
	v := harness.StartVault(t)
	v.TransitKey(mount, key)
	p := harness.StartPlugin(t, v, harness.PluginOptions{Key: key, RefreshInterval: 200 * time.Millisecond, AssociatedData: []byte("cluster-a")})
	id1 := p.WaitKeyID(t, 20*time.Second)
	c := p.Client(t)
	ctx := context.Background()
	old, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("v1 seed")})
	if err != nil {
		t.Fatal(err)
	}
	v.Write(mount+"/keys/"+key+"/rotate", nil)
	deadline := time.Now().Add(30 * time.Second)
	for p.Plugin.CurrentKeyID() == id1 {
		if time.Now().After(deadline) {
			t.Fatal("rotation did not show within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	id2 := roundTrip(t, c, "v2 seed")
	k2, _ := transitkey.ParseKeyID(id2)
	if k2.Version != 2 {
		t.Fatalf("after one rotation key_id %q has version %d", id2, k2.Version)
	}
	dec, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: old.Ciphertext, KeyId: old.KeyId, Annotations: old.Annotations})
	if err != nil || string(dec.Plaintext) != "v1 seed" {
		t.Fatalf("version 1 seed after rotation: %v", err)
	}
	// Associated data is bound: Vault itself refuses the same ciphertext
	// without it.
	if _, err := v.Client().Logical().Write(mount+"/decrypt/"+key, map[string]any{"ciphertext": string(old.Ciphertext)}); err == nil {
		t.Fatal("ciphertext decrypted without its associated data")
	}
	// Retire version 1: its seeds can no longer be unwrapped.
	v.Write(mount+"/keys/"+key+"/config", map[string]any{"min_decryption_version": 2})
	if _, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: old.Ciphertext, KeyId: old.KeyId, Annotations: old.Annotations}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Decrypt of a retired version: %v, want InvalidArgument", err)
	}

	// A key deleted and created again never repeats an old key_id.
	time.Sleep(1100 * time.Millisecond) // creation times are in seconds
	v.Write(mount+"/keys/"+key+"/config", map[string]any{"deletion_allowed": true})
	if _, err := v.Client().Logical().Delete(mount + "/keys/" + key); err != nil {
		t.Fatal(err)
	}
	v.TransitKey(mount, key)
	deadline = time.Now().Add(30 * time.Second)
	for {
		id := p.Plugin.CurrentKeyID()
		if k, _ := transitkey.ParseKeyID(id); k.Version == 1 {
			if id == id1 {
				t.Fatalf("recreated key repeats key_id %q", id)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recreated key not seen; key_id still %q", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	roundTrip(t, c, "recreated")
}

// appRole enables AppRole (once), creates role kms with the plugin's
// policy and token lifetimes, and returns the auth method reading its
// role ID and secret ID from files.
func appRole(t *testing.T, v *harness.Vault, ttl, maxTTL string) vault.AppRole {
	t.Helper()
	if auths, err := v.Client().Sys().ListAuth(); err != nil {
		t.Fatal(err)
	} else if _, ok := auths["approle/"]; !ok {
		v.EnableAuth("approle", "approle")
	}
	role := map[string]any{"token_policies": "kms-plugin", "token_ttl": ttl}
	if maxTTL != "" {
		role["token_max_ttl"] = maxTTL
	}
	v.Write("auth/approle/role/kms", role)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "role-id"), v.Read("auth/approle/role/kms/role-id").Data["role_id"].(string))
	write(t, filepath.Join(dir, "secret-id"), v.Write("auth/approle/role/kms/secret-id", nil).Data["secret_id"].(string))
	return vault.AppRole{RoleIDFile: filepath.Join(dir, "role-id"), SecretIDFile: filepath.Join(dir, "secret-id")}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
