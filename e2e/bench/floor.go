package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/syncer"
)

// floorNamespace holds the objects of the API server floor measurement.
const floorNamespace = "floor"

// measureFloor times, with no controller and no Vault, the writes one kv
// VaultSecret costs however well a controller does its part: its create,
// the create of its Secret and one status write saying Ready (with one
// schedule per source under -sources), for n VaultSecrets from the same 16
// writers. No controller can make n
// VaultSecrets Ready faster than kube-apiserver takes these writes. The
// objects are deleted afterwards, so no controller started later sees
// them.
//
// One pass on two shared cores varied from 3.9 s to 6.8 s between runs of
// the same day, so the floor is the median of three, and all three are
// printed.
//
// profile, when set, is called as the last pass starts: the API server's
// profile of a floor pass, to set beside that of the controller's run.
func measureFloor(env *harness.Main, c client.Client, n int, profile func()) time.Duration {
	// A first pass warms the API server (its first writes of a resource
	// are slower), as the runs measured later find it warm.
	floorPass(env, c, n)
	passes := make([]time.Duration, 3)
	cpu := make([]string, 3)
	for i := range passes {
		if i == len(passes)-1 && profile != nil {
			profile()
		}
		passes[i], cpu[i] = floorPass(env, c, n)
	}
	fmt.Printf("  API server floor passes: %.1fs, %.1fs, %.1fs (the median is the floor)\n", passes[0].Seconds(), passes[1].Seconds(), passes[2].Seconds())
	fmt.Printf("  CPU of the median pass: %s\n", cpu[slices.Index(passes, slices.Sorted(slices.Values(passes))[1])])
	slices.Sort(passes)
	return passes[1]
}

// floorPass times one pass and says where the CPU of its timed part went.
func floorPass(env *harness.Main, c client.Client, n int) (time.Duration, string) {
	ctx := context.Background()
	ttl := metav1.Duration{Duration: time.Minute}
	data := map[string][]byte{"password": []byte("p")}
	cpuBefore := sampleCPU()
	start := time.Now()
	err := inParallel(0, n, func(i int) error {
		vs := kvVaultSecret(floorNamespace, fmt.Sprintf("vs-%05d", i), ttl)
		if err := c.Create(ctx, vs); err != nil {
			return err
		}
		yes := true
		now := metav1.Now()
		expires := metav1.NewTime(now.Add(ttl.Duration))
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: floorNamespace, Name: vs.Name,
			Labels:      map[string]string{syncer.ManagedByLabel: syncer.ManagedByValue},
			Annotations: map[string]string{syncer.ExpiresAtAnnotation: expires.UTC().Format(time.RFC3339)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VaultSecret", Name: vs.Name, UID: vs.UID,
				Controller: &yes, BlockOwnerDeletion: &yes}}},
			Type: corev1.SecretTypeOpaque, Data: data}
		if err := c.Create(ctx, s); err != nil {
			return err
		}
		vs.Status.ObservedGeneration = vs.Generation
		vs.Status.ExpiresAt, vs.Status.RefreshAt, vs.Status.LastSyncTime = &expires, &expires, &now
		vs.Status.SecretName = s.Name
		// The status the controller writes, in shape and size: the data
		// HMAC names its key (syncer/fingerprint.go: prefix, 8-character
		// key id, 43-character sum), and the source and metadata hashes
		// and applied generation record what was applied.
		vs.Status.DataHMAC = "hmac-sha256:" + strings.Repeat("K", 8) + ":" + strings.Repeat("A", 43)
		vs.Status.SourceHash, vs.Status.MetadataHash = strings.Repeat("0", 16), strings.Repeat("0", 16)
		vs.Status.AppliedGeneration = vs.Generation
		// With -sources, each source's schedule as the controller keeps it
		// (syncer/act_sources.go): its spec's hash, the keys it gave and
		// its times.
		for i := range vs.Spec.Sources {
			key := "password"
			if i > 0 {
				key = fmt.Sprintf("key%d", i)
			}
			vs.Status.Sources = append(vs.Status.Sources, v1alpha1.SourceStatus{Hash: strings.Repeat("0", 16), Keys: []string{key},
				LastSyncTime: &now, RefreshAt: &expires, ExpiresAt: &expires})
		}
		meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Synced",
			Message: fmt.Sprintf("Secret %q synced; expires at %s", s.Name, expires.UTC().Format(time.RFC3339)), ObservedGeneration: vs.Generation})
		return c.Status().Update(ctx, vs)
	})
	took := time.Since(start)
	cpu := sampleCPU().since(cpuBefore)
	if err != nil {
		env.Fatalf("floor: %v", err)
	}
	if err := c.DeleteAllOf(ctx, &v1alpha1.VaultSecret{}, client.InNamespace(floorNamespace)); err != nil {
		env.Fatalf("floor: delete VaultSecrets: %v", err)
	}
	if err := c.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(floorNamespace)); err != nil {
		env.Fatalf("floor: delete Secrets: %v", err)
	}
	return took, cpu
}
