package syncer

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// decideFixture is a synced dynamic VaultSecret at t0: its Secret holds
// lease L1 (issued at t0, 30 s, renewable, wanted 2 min).
func decideFixture() Observed {
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "app", Generation: 1},
		Spec: v1alpha1.VaultSecretSpec{Source: v1alpha1.Source{Dynamic: &v1alpha1.DynamicSource{Mount: "database", Path: "creds/app"}},
			TTL: &metav1.Duration{Duration: 2 * time.Minute}}}
	vs.Status = v1alpha1.VaultSecretStatus{ObservedGeneration: 1, AppliedGeneration: 1,
		LeaseJournal: v1alpha1.LeaseJournal{Lease: &v1alpha1.Lease{ID: "L1", IssuedAt: metav1.NewTime(t0), ExpiresAt: metav1.NewTime(t0.Add(30 * time.Second)), Renewable: true, TokenAccessor: "acc"}},
		ExpiresAt:    ptrTime(t0.Add(30 * time.Second)), RefreshAt: ptrTime(t0.Add(20 * time.Second)), LastSyncTime: ptrTime(t0),
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: ReasonSynced, ObservedGeneration: 1}}}
	o := Observed{VS: vs, Kind: "dynamic", Secret: &corev1Secret{Owned: true, LeaseID: "L1", ExpiresAt: formatTime(t0.Add(30 * time.Second))},
		SourceHash: sourceHash(vs), MetadataHash: metadataHash(vs), TokenAccessor: "acc"}
	vs.Status.SourceHash, vs.Status.MetadataHash = o.SourceHash, o.MetadataHash
	return o
}

func kvFixture() Observed {
	o := decideFixture()
	vs := o.VS
	vs.Spec.Source = v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app"}}
	vs.Status.Lease = nil
	o.Kind, o.Secret.LeaseID = "kv", ""
	o.SourceHash = sourceHash(vs)
	vs.Status.SourceHash = o.SourceHash
	return o
}

// forceSync sets the force-sync annotation to a value this process has
// not synced yet.
func forceSync(o *Observed, v string) {
	o.VS.Annotations = map[string]string{ForceSyncAnnotation: v}
	o.SourceHash, o.Nudge = syncHash(o.VS, nil), true
}

func failing(o *Observed, since, retryAt time.Time) {
	o.VS.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: ReasonVaultUnavailable,
		ObservedGeneration: o.VS.Generation, LastTransitionTime: metav1.NewTime(since)}}
	o.VS.Status.RefreshAt = ptrTime(retryAt)
}

// failedWith is failing for five minutes from t0, with reason.
func failedWith(o *Observed, reason string) {
	failing(o, t0, t0.Add(5*time.Minute))
	o.VS.Status.Conditions[0].Reason = reason
}

func pending(o *Observed, id string) {
	o.VS.Status.PendingLease = &v1alpha1.Lease{ID: id, IssuedAt: metav1.NewTime(t0.Add(25 * time.Second)), ExpiresAt: metav1.NewTime(t0.Add(55 * time.Second)), Renewable: true, TokenAccessor: "acc"}
}

// specEdit changes the spec and bumps the generation.
func specEdit(o *Observed, f func(*v1alpha1.VaultSecret)) {
	f(o.VS)
	o.VS.Generation++
	o.SourceHash, o.MetadataHash = sourceHash(o.VS), metadataHash(o.VS)
}

// TestDecide is the lifetime rules, one row each.
func TestDecide(t *testing.T) {
	cases := []struct {
		name    string
		base    func() Observed
		mutate  func(*Observed)
		now     time.Time
		action  Action
		check   func(*testing.T, Plan)
		wakeDue time.Time
	}{
		{name: "fresh lease: wait until two thirds", base: decideFixture, mutate: func(*Observed) {}, now: t0.Add(5 * time.Second), action: ActWait, wakeDue: refreshPoint(t0, 30*time.Second, jitterFor(""))},
		{name: "lease due: renew", base: decideFixture, mutate: func(*Observed) {}, now: t0.Add(21 * time.Second), action: ActRenew},
		{name: "wanted lifetime reached: new credentials", base: decideFixture, mutate: func(o *Observed) {
			o.VS.Status.LastSyncTime = ptrTime(t0.Add(100 * time.Second))
			o.VS.Status.Lease.ExpiresAt = metav1.NewTime(t0.Add(130 * time.Second))
		}, now: t0.Add(121 * time.Second), action: ActFetch},
		{name: "no Secret: fetch", base: decideFixture, mutate: func(o *Observed) { o.Secret = nil; o.Confirmed = true }, now: t0.Add(time.Second), action: ActFetch},
		{name: "invalid spec: nothing reaches Vault", base: decideFixture, mutate: func(o *Observed) { o.Invalid = errors.New("bad") }, now: t0, action: ActInvalid},
		{name: "Secret of someone else, target.adopt: written over", base: kvFixture, mutate: func(o *Observed) {
			o.Secret.Owned, o.Secret.Adoptable = false, true
		}, now: t0.Add(5 * time.Second), action: ActFetch},
		{name: "Secret of someone else, adoptable but backing off: wait", base: kvFixture, mutate: func(o *Observed) {
			o.Secret.Owned, o.Secret.Adoptable = false, true
			failing(o, t0, t0.Add(10*time.Second))
		}, now: t0.Add(5 * time.Second), action: ActWait, wakeDue: t0.Add(10 * time.Second)},
		// A VaultAuth deleted, then applied again unchanged: the hash is
		// the last sync's, and after a controller restart no nudge tells.
		{name: "VaultAuth back (kv), same hash, no nudge: fetch at once", base: kvFixture, mutate: func(o *Observed) {
			failedWith(o, ReasonAuthNotFound)
		}, now: t0.Add(10 * time.Second), action: ActFetch},
		{name: "connection allowed again (dynamic, lease fresh): fetch at once", base: decideFixture, mutate: func(o *Observed) {
			failedWith(o, ReasonConnectionNotAllowed)
		}, now: t0.Add(5 * time.Second), action: ActFetch},
		{name: "connection CA fixed (kv): fetch at once", base: kvFixture, mutate: func(o *Observed) {
			failedWith(o, ReasonConnectionInvalid)
		}, now: t0.Add(10 * time.Second), action: ActFetch},
		{name: "VaultAuth still missing: invalid, nothing reaches Vault", base: kvFixture, mutate: func(o *Observed) {
			failedWith(o, ReasonAuthNotFound)
			o.Invalid = &authNotFoundError{namespace: "app", name: "app"}
		}, now: t0.Add(10 * time.Second), action: ActInvalid},
		{name: "Vault refused (kv), same hash: the back-off holds", base: kvFixture, mutate: func(o *Observed) {
			failedWith(o, ReasonPermissionDenied)
		}, now: t0.Add(10 * time.Second), action: ActWait},
		{name: "Secret of someone else: conflict", base: decideFixture, mutate: func(o *Observed) { o.Secret.Owned = false }, now: t0, action: ActConflict, wakeDue: t0.Add(time.Minute)},
		{name: "pending lease held by the Secret: promote, no Vault read", base: decideFixture, mutate: func(o *Observed) {
			pending(o, "L2")
			o.Secret.LeaseID, o.Confirmed = "L2", true
		}, now: t0.Add(26 * time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if !p.Promote || p.DropPending {
				t.Fatalf("plan %+v, want promote", p)
			}
		}},
		{name: "pending lease held by the Secret, with the data of that write: promote, not a hand edit", base: decideFixture, mutate: func(o *Observed) {
			pending(o, "L2")
			o.Secret.LeaseID, o.Confirmed, o.Data = "L2", true, DataEdited
		}, now: t0.Add(26 * time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if !p.Promote || p.Restore {
				t.Fatalf("plan %+v, want promote without a restore (new credentials)", p)
			}
		}},
		{name: "pending lease not in the Secret (API server): revoke it, issue again", base: decideFixture, mutate: func(o *Observed) {
			pending(o, "L2")
			o.Confirmed = true
		}, now: t0.Add(26 * time.Second), action: ActFetch, check: func(t *testing.T, p Plan) {
			if p.Promote || !p.DropPending || p.Previous != PreviousWait {
				t.Fatalf("plan %+v: the lease the Secret holds must not be scheduled for revocation", p)
			}
		}},
		{name: "pending lease not in the Secret, failing: wait for the back-off", base: decideFixture, mutate: func(o *Observed) {
			pending(o, "L2")
			o.Confirmed = true
			failing(o, t0.Add(25*time.Second), t0.Add(30*time.Second))
		}, now: t0.Add(26 * time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if !p.DropPending || p.Promote {
				t.Fatalf("plan %+v", p)
			}
		}, wakeDue: t0.Add(30 * time.Second)},
		{name: "replaced lease due: revoke", base: decideFixture, mutate: func(o *Observed) {
			o.VS.Status.Lease.PreviousID, o.VS.Status.Lease.RevokePreviousAt = "L0", ptrTime(t0.Add(10*time.Second))
			o.VS.Status.Lease.PreviousExpiresAt = ptrTime(t0.Add(time.Minute))
		}, now: t0.Add(11 * time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if p.Previous != PreviousRevoke {
				t.Fatalf("previous %d, want revoke", p.Previous)
			}
		}},
		{name: "replaced lease ended on its own: forget", base: decideFixture, mutate: func(o *Observed) {
			o.VS.Status.Lease.PreviousID, o.VS.Status.Lease.RevokePreviousAt = "L0", ptrTime(t0.Add(10*time.Second))
			o.VS.Status.Lease.PreviousExpiresAt = ptrTime(t0.Add(5 * time.Second))
		}, now: t0.Add(11 * time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if p.Previous != PreviousForget {
				t.Fatalf("previous %d, want forget", p.Previous)
			}
		}},
		{name: "source changed: fetch at once", base: decideFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Source.Dynamic.Path = "creds/other" })
		}, now: t0.Add(time.Second), action: ActFetch},
		{name: "source changed after a failure of the old spec: fetch at once", base: decideFixture, mutate: func(o *Observed) {
			failing(o, t0.Add(-time.Hour), t0.Add(5*time.Minute))
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Source.Dynamic.Path = "creds/other" })
		}, now: t0.Add(time.Second), action: ActFetch},
		{name: "source change failed once: retried at the back-off, not at the old refreshAt", base: kvFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Source.KV.Path = "other" })
			failing(o, t0, t0.Add(5*time.Second))
			o.VS.Status.ObservedGeneration = o.VS.Generation
		}, now: t0.Add(5 * time.Second), action: ActFetch},
		{name: "source change failing: wait for the back-off", base: kvFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Source.KV.Path = "other" })
			failing(o, t0, t0.Add(5*time.Second))
		}, now: t0.Add(2 * time.Second), action: ActWait, wakeDue: t0.Add(5 * time.Second)},
		{name: "labels changed: metadata only", base: decideFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Target.Labels = map[string]string{"team": "b"} })
		}, now: t0.Add(time.Second), action: ActWriteMetadata},
		{name: "annotations changed (kv): metadata only", base: kvFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Target.Annotations = map[string]string{"note": "x"} })
		}, now: t0.Add(time.Second), action: ActWriteMetadata},
		{name: "force-sync value (kv, synced): fetch", base: kvFixture, mutate: func(o *Observed) {
			forceSync(o, "1")
		}, now: t0.Add(time.Second), action: ActFetch},
		{name: "force-sync value already synced: wait", base: kvFixture, mutate: func(o *Observed) {
			forceSync(o, "1")
			o.VS.Status.SourceHash, o.Nudge = o.SourceHash, false
		}, now: t0.Add(time.Second), action: ActWait, wakeDue: t0.Add(20 * time.Second)},
		{name: "force-sync value while failing: tried at once, not at the back-off", base: kvFixture, mutate: func(o *Observed) {
			failing(o, t0, t0.Add(5*time.Minute))
			forceSync(o, "1")
		}, now: t0.Add(time.Second), action: ActFetch},
		{name: "force-sync value tried and failing: back to the back-off", base: kvFixture, mutate: func(o *Observed) {
			failing(o, t0, t0.Add(25*time.Second))
			forceSync(o, "1")
			o.Nudge = false
		}, now: t0.Add(time.Second), action: ActWait, wakeDue: t0.Add(25 * time.Second)},
		{name: "VaultAuth edited (dynamic, failing): new credentials at once", base: decideFixture, mutate: func(o *Observed) {
			failing(o, t0, t0.Add(5*time.Minute))
			o.VS.Spec.AuthRef = &v1alpha1.AuthRef{Name: "app"}
			o.SourceHash = syncHash(o.VS, &v1alpha1.VaultAuth{Spec: v1alpha1.VaultAuthSpec{Kubernetes: &v1alpha1.KubernetesAuth{Role: "other", ServiceAccountName: "app"}}})
			o.Nudge = true
		}, now: t0.Add(time.Second), action: ActFetch},
		{name: "VaultAuth missing: nothing reaches Vault, the Secret stays", base: kvFixture, mutate: func(o *Observed) {
			o.VS.Spec.AuthRef = &v1alpha1.AuthRef{Name: "gone"}
			o.Invalid = &authNotFoundError{namespace: "app", name: "gone"}
		}, now: t0.Add(time.Second), action: ActInvalid},
		{name: "rollout targets changed: nothing to write", base: decideFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) {
				vs.Spec.RolloutRestartTargets = []v1alpha1.RolloutRestartTarget{{Kind: "Deployment", Name: "web"}}
			})
		}, now: t0.Add(time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if !p.MarkApplied {
				t.Fatal("the generation is not marked applied")
			}
		}},
		{name: "grace period changed: nothing to write", base: decideFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.RevokeGracePeriod = &metav1.Duration{Duration: time.Minute} })
		}, now: t0.Add(time.Second), action: ActWait},
		{name: "expiry renewed in status but not on the Secret: rewrite metadata", base: decideFixture, mutate: func(o *Observed) {
			o.VS.Status.ExpiresAt = ptrTime(t0.Add(50 * time.Second))
			o.VS.Status.Lease.ExpiresAt = metav1.NewTime(t0.Add(50 * time.Second))
		}, now: t0.Add(time.Second), action: ActWriteMetadata},
		{name: "edited by hand: restore", base: kvFixture, mutate: func(o *Observed) { o.Data = DataEdited }, now: t0.Add(time.Second), action: ActFetch, check: func(t *testing.T, p Plan) {
			if !p.Restore {
				t.Fatal("not marked as a restore")
			}
		}},
		{name: "edited again right after a restore: rate-limited", base: kvFixture, mutate: func(o *Observed) {
			o.Data, o.Restores, o.LastRestore = DataEdited, 3, t0
		}, now: t0.Add(time.Second), action: ActWait, wakeDue: t0.Add(20 * time.Second)},
		// A pass wrote the Secret, then its status write was lost: the
		// Secret's write record says so.
		{name: "kv write whose status was lost: recorded, nothing read", base: kvFixture, mutate: func(o *Observed) {
			lostWrite(o, t0.Add(10*time.Second), t0.Add(40*time.Second))
		}, now: t0.Add(11 * time.Second), action: ActWait, wakeDue: t0.Add(40 * time.Second), check: recordedNotRestored},
		{name: "first kv write whose status was lost: recorded, nothing read", base: kvFixture, mutate: func(o *Observed) {
			o.VS.Status = v1alpha1.VaultSecretStatus{}
			lostWrite(o, t0.Add(10*time.Second), t0.Add(40*time.Second))
		}, now: t0.Add(11 * time.Second), action: ActWait, wakeDue: t0.Add(40 * time.Second), check: recordedNotRestored},
		{name: "lost write found past its refresh: recorded, then read", base: kvFixture, mutate: func(o *Observed) {
			lostWrite(o, t0.Add(10*time.Second), t0.Add(40*time.Second))
		}, now: t0.Add(41 * time.Second), action: ActFetch, check: recordedNotRestored},
		{name: "lost write after a failing pass: its back-off ends with it", base: kvFixture, mutate: func(o *Observed) {
			failing(o, t0, t0.Add(5*time.Minute))
			lostWrite(o, t0.Add(10*time.Second), t0.Add(40*time.Second))
		}, now: t0.Add(11 * time.Second), action: ActWait, wakeDue: t0.Add(40 * time.Second), check: recordedNotRestored},
		{name: "HMAC key recreated: adopt, no read, no restart", base: decideFixture, mutate: func(o *Observed) { o.Data = DataOtherKey }, now: t0.Add(time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if !p.AdoptHMAC || p.Restore {
				t.Fatalf("plan %+v", p)
			}
		}},
		{name: "dynamic switched to kv: the lease is revoked", base: decideFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) {
				vs.Spec.Source = v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app"}}
			})
			o.Kind = "kv"
		}, now: t0.Add(time.Second), action: ActFetch, check: func(t *testing.T, p Plan) {
			if !p.ReleaseStale {
				t.Fatal("the old lease is not revoked")
			}
		}},
		{name: "refreshInterval shortened: read due from the last read, not the old refreshAt", base: kvFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.RefreshInterval = &metav1.Duration{Duration: 10 * time.Second} })
		}, now: t0.Add(11 * time.Second), action: ActFetch},
		{name: "refreshInterval: wait until the last read plus the interval", base: kvFixture, mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.RefreshInterval = &metav1.Duration{Duration: 15 * time.Second} })
		}, now: t0.Add(5 * time.Second), action: ActWait, wakeDue: func() time.Time { at, _ := KVPlan(t0, 2*time.Minute, 15*time.Second, jitterFor("")); return at }()},
		{name: "refreshInterval while failing: the back-off holds", base: kvFixture, mutate: func(o *Observed) {
			o.VS.Spec.RefreshInterval = &metav1.Duration{Duration: 10 * time.Second}
			failing(o, t0.Add(20*time.Second), t0.Add(25*time.Second))
		}, now: t0.Add(22 * time.Second), action: ActWait, wakeDue: t0.Add(25 * time.Second)},
		{name: "Secret missing while waiting for a turn: fetched at once, no back-off", base: kvFixture, mutate: func(o *Observed) {
			o.Secret = nil
			o.VS.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: ReasonSecretMissing,
				ObservedGeneration: o.VS.Generation, LastTransitionTime: metav1.NewTime(t0.Add(2 * time.Second))}}
		}, now: t0.Add(3 * time.Second), action: ActFetch},
		{name: "kv refresh due", base: kvFixture, mutate: func(*Observed) {}, now: t0.Add(21 * time.Second), action: ActFetch},
		{name: "kv refresh failing: wait for the back-off", base: kvFixture, mutate: func(o *Observed) { failing(o, t0.Add(20*time.Second), t0.Add(25*time.Second)) },
			now: t0.Add(22 * time.Second), action: ActWait, wakeDue: t0.Add(25 * time.Second)},
		{name: "renewal failing: wait for the back-off", base: decideFixture, mutate: func(o *Observed) { failing(o, t0.Add(20*time.Second), t0.Add(25*time.Second)) },
			now: t0.Add(22 * time.Second), action: ActWait, wakeDue: t0.Add(25 * time.Second)},
		{name: "token that created a token-bound lease is gone: new credentials", base: decideFixture, mutate: func(o *Observed) {
			o.VS.Status.Lease.TokenExpiresAt = ptrTime(t0.Add(15 * time.Second))
			o.TokenAccessor = ""
		}, now: t0.Add(11 * time.Second), action: ActFetch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.base()
			tc.mutate(&o)
			p := Decide(o, tc.now)
			if p.Action != tc.action {
				t.Fatalf("action %s (%s), want %s", p.Action, p.Why, tc.action)
			}
			if !tc.wakeDue.IsZero() && !p.WakeAt.Equal(tc.wakeDue) {
				t.Fatalf("wake at %s, want %s", p.WakeAt.Sub(t0), tc.wakeDue.Sub(t0))
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

func TestRestoreBackoff(t *testing.T) {
	cases := []struct {
		restores int
		since    time.Duration
		want     time.Duration
	}{
		{0, 0, 0}, {1, time.Second, 4 * time.Second}, {1, 5 * time.Second, 0}, {3, 0, 20 * time.Second}, {20, time.Minute, 4 * time.Minute}, {20, restoreResetAfter, 0},
	}
	for _, tc := range cases {
		if got := RestoreBackoff(tc.restores, tc.since); got != tc.want {
			t.Errorf("RestoreBackoff(%d, %s) = %s, want %s", tc.restores, tc.since, got, tc.want)
		}
	}
}

func TestFailureReason(t *testing.T) {
	exp := t0.Add(time.Minute)
	if r, _ := FailureReason(t0, exp, false, ReasonVaultUnavailable, "down"); r != ReasonVaultUnavailable {
		t.Fatalf("before expiry: %s", r)
	}
	r, msg := FailureReason(exp, exp, true, ReasonVaultUnavailable, "down")
	if r != ReasonExpired || !contains(msg, "Retain") {
		t.Fatalf("retained: %s %q", r, msg)
	}
	if _, msg := FailureReason(exp, exp, false, ReasonVaultUnavailable, "down"); !contains(msg, "deleted") {
		t.Fatalf("deleted: %q", msg)
	}
}

func TestFinalizeGiveUp(t *testing.T) {
	if FinalizeGiveUp(t0.Add(9*time.Minute), t0, 0) || !FinalizeGiveUp(t0.Add(10*time.Minute), t0, 0) || !FinalizeGiveUp(t0.Add(time.Minute), t0, time.Minute) {
		t.Fatal("finalizer timeout")
	}
}

// lostWrite is a Secret written at at by a pass that planned its next
// read at refresh and whose status write was lost.
func lostWrite(o *Observed, at, refresh time.Time) {
	o.Data = DataEdited
	o.Unrecorded = &WriteRecord{SourceHash: o.SourceHash, MetadataHash: o.MetadataHash, LastSync: at.Unix(),
		RefreshAt: refresh.Unix(), ExpiresAt: at.Add(time.Minute).Unix()}
	o.DataHMAC = "hmac-sha256:id:new"
	o.Secret.ExpiresAt = formatTime(at.Add(time.Minute))
}

func recordedNotRestored(t *testing.T, p Plan) {
	t.Helper()
	if !p.RecordWrite || p.Restore || p.AllSources {
		t.Fatalf("plan %+v, want the write recorded, not restored", p)
	}
}

func TestDataState(t *testing.T) {
	key, other := []byte("key-1"), []byte("key-2")
	data := map[string][]byte{"a": []byte("1")}
	rec := dataHMAC(key, data)
	cases := []struct {
		name     string
		key      []byte
		recorded string
		data     map[string][]byte
		want     DataState
	}{
		{"same data", key, rec, data, DataUnchanged},
		{"edited", key, rec, map[string][]byte{"a": []byte("2")}, DataEdited},
		{"key recreated", other, rec, data, DataOtherKey},
		{"nothing recorded", key, "", data, DataUnchanged},
		{"recorded before key ids, same", key, hmacPrefix + rawHMAC(key, data), data, DataUnchanged},
		{"recorded before key ids, edited", key, hmacPrefix + rawHMAC(key, data), map[string][]byte{"a": []byte("2")}, DataEdited},
	}
	for _, tc := range cases {
		if got := dataState(tc.key, tc.recorded, tc.data); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestKeepPastExpiry(t *testing.T) {
	now := t0.Add(time.Minute)
	base := func() (*v1alpha1.VaultSecret, *corev1.Secret) {
		o := decideFixture()
		o.VS.Status.SecretName = "db"
		o.VS.Status.ExpiresAt = ptrTime(t0.Add(2 * time.Minute))
		return o.VS, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Annotations: map[string]string{LeaseAnnotation: "L1"}}}
	}
	vs, s := base()
	if keep, until := KeepPastExpiry(vs, s, now); !keep || !until.Equal(t0.Add(2*time.Minute)) {
		t.Fatal("a renewed Secret whose annotation lags would be deleted")
	}
	vs, s = base()
	s.Annotations[LeaseAnnotation] = "L0"
	if keep, _ := KeepPastExpiry(vs, s, now); keep {
		t.Fatal("a Secret holding another lease is kept")
	}
	vs, s = base()
	vs.Status.ExpiresAt = ptrTime(now)
	if keep, _ := KeepPastExpiry(vs, s, now); keep {
		t.Fatal("an expired Secret is kept")
	}
	vs, s = base()
	vs.Spec.Source = v1alpha1.Source{KV: &v1alpha1.KVSource{}}
	vs.Spec.ExpiryPolicy = v1alpha1.ExpiryRetain
	vs.Status.ExpiresAt = ptrTime(t0)
	if keep, until := KeepPastExpiry(vs, s, now); !keep || !until.IsZero() {
		t.Fatal("a retained kv Secret is deleted")
	}
}
