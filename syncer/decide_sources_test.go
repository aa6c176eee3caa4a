package syncer

import (
	"errors"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// sourcesFixture is a synced VaultSecret of two sources at t0: database
// credentials (spec.sources[0], lease L1 issued at t0 for 30 s, renewable,
// wanted 2 min) and a kv path (spec.sources[1], read at t0). Its Secret
// holds L1.
func sourcesFixture() Observed {
	vs := &v1alpha1.VaultSecret{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "app", Generation: 1},
		Spec: v1alpha1.VaultSecretSpec{Sources: []v1alpha1.Source{
			{Dynamic: &v1alpha1.DynamicSource{Mount: "database", Path: "creds/app"}},
			{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/config"}},
		}, TTL: &metav1.Duration{Duration: 2 * time.Minute}}}
	kvRefresh, kvExpires := KVPlan(t0, 2*time.Minute, 0, jitterFor(""))
	vs.Status = v1alpha1.VaultSecretStatus{ObservedGeneration: 1, AppliedGeneration: 1,
		Sources: []v1alpha1.SourceStatus{
			{Hash: sourceSpecHash(&vs.Spec.Sources[0]), Keys: []string{"password", "username"}, LastSyncTime: ptrTime(t0),
				RefreshAt: ptrTime(refreshPoint(t0, 30*time.Second, jitterFor(""))), ExpiresAt: ptrTime(t0.Add(30 * time.Second)),
				LeaseJournal: v1alpha1.LeaseJournal{Lease: &v1alpha1.Lease{ID: "L1", IssuedAt: metav1.NewTime(t0),
					ExpiresAt: metav1.NewTime(t0.Add(30 * time.Second)), Renewable: true, TokenAccessor: "acc"}}},
			{Hash: sourceSpecHash(&vs.Spec.Sources[1]), Keys: []string{"apiKey"}, LastSyncTime: ptrTime(t0),
				RefreshAt: ptrTime(kvRefresh), ExpiresAt: ptrTime(kvExpires)},
		},
		ExpiresAt: ptrTime(t0.Add(30 * time.Second)), RefreshAt: ptrTime(refreshPoint(t0, 30*time.Second, jitterFor(""))), LastSyncTime: ptrTime(t0),
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: ReasonSynced, ObservedGeneration: 1}}}
	o := Observed{VS: vs, Kind: "sources", Secret: &corev1Secret{Owned: true, LeaseID: "L1", ExpiresAt: formatTime(t0.Add(30 * time.Second))},
		SourceHash: sourceHash(vs), MetadataHash: metadataHash(vs), TokenAccessor: "acc"}
	vs.Status.SourceHash, vs.Status.MetadataHash = o.SourceHash, o.MetadataHash
	return o
}

// pendingSource records lease id as pending in source i's journal, as a
// re-issue at t0+25s does before it writes the Secret.
func pendingSource(o *Observed, i int, id string) {
	o.VS.Status.Sources[i].PendingLease = &v1alpha1.Lease{ID: id, IssuedAt: metav1.NewTime(t0.Add(25 * time.Second)),
		ExpiresAt: metav1.NewTime(t0.Add(55 * time.Second)), Renewable: true, TokenAccessor: "acc"}
}

// planOf is what a plan does with each source, for table checks: "r"
// read, "n" renew, "-" neither.
func planOf(p Plan) []string {
	out := make([]string, len(p.Sources))
	for i, sp := range p.Sources {
		switch {
		case sp.Read:
			out[i] = "r"
		case sp.Renew:
			out[i] = "n"
		default:
			out[i] = "-"
		}
	}
	return out
}

// TestDecideSources is the lifetime rules of spec.sources, each source
// with its own schedule and lease journal, one row each.
func TestDecideSources(t *testing.T) {
	kvRefresh, _ := KVPlan(t0, 2*time.Minute, 0, jitterFor(""))
	leaseRefresh := refreshPoint(t0, 30*time.Second, jitterFor(""))
	cases := []struct {
		name    string
		mutate  func(*Observed)
		now     time.Time
		action  Action
		sources []string // per source: r read, n renew, - neither
		check   func(*testing.T, Plan)
		wakeDue time.Time
	}{
		{name: "nothing due: wait for the lease's renewal, the earliest", mutate: func(*Observed) {}, now: t0.Add(5 * time.Second),
			action: ActWait, sources: []string{"-", "-"}, wakeDue: leaseRefresh},
		{name: "lease due: renew it, the kv source untouched", mutate: func(*Observed) {}, now: t0.Add(21 * time.Second),
			action: ActRenew, sources: []string{"n", "-"}},
		{name: "kv due, lease not: read the kv source only, no lease touched", mutate: func(o *Observed) {
			l := o.VS.Status.Sources[0].Lease
			l.ExpiresAt = metav1.NewTime(t0.Add(10 * time.Minute))
			o.VS.Status.Sources[0].ExpiresAt = &l.ExpiresAt
			o.VS.Spec.TTL = &metav1.Duration{Duration: 20 * time.Minute}
			o.SourceHash = sourceHash(o.VS)
			o.VS.Status.SourceHash = o.SourceHash
		}, now: kvRefresh.Add(time.Second), action: ActFetch, sources: []string{"-", "r"}, check: func(t *testing.T, p Plan) {
			if p.AllSources || p.Sources[0].busy() {
				t.Fatalf("plan %+v touches the lease", p)
			}
		}},
		{name: "both due: renew one, read the other, one write", mutate: func(*Observed) {}, now: kvRefresh.Add(time.Second),
			action: ActFetch, sources: []string{"n", "r"}},
		{name: "lease cannot reach the wanted lifetime (max TTL): new credentials for that source only", mutate: func(o *Observed) {
			o.VS.Status.Sources[0].LastSyncTime = ptrTime(t0.Add(100 * time.Second))
			o.VS.Status.Sources[0].Lease.ExpiresAt = metav1.NewTime(t0.Add(130 * time.Second))
			o.VS.Status.Sources[1].RefreshAt = ptrTime(t0.Add(10 * time.Minute))
		}, now: t0.Add(121 * time.Second), action: ActFetch, sources: []string{"r", "-"}},
		{name: "token of a token-bound lease gone: new credentials for that source", mutate: func(o *Observed) {
			o.VS.Status.Sources[0].Lease.TokenExpiresAt = ptrTime(t0.Add(15 * time.Second))
			o.TokenAccessor = ""
		}, now: t0.Add(11 * time.Second), action: ActFetch, sources: []string{"r", "-"}},
		{name: "pending lease, Secret from the cache: neither promoted nor dropped until read back; the held lease renewed", mutate: func(o *Observed) {
			pendingSource(o, 0, "L2")
		}, now: t0.Add(26 * time.Second), action: ActRenew, sources: []string{"n", "-"}, check: func(t *testing.T, p Plan) {
			if p.Sources[0].Promote || p.Sources[0].DropPending {
				t.Fatalf("plan %+v decided on a cached Secret", p.Sources[0])
			}
		}},
		{name: "pending lease the Secret holds: promoted; the replaced one scheduled, not revoked", mutate: func(o *Observed) {
			pendingSource(o, 0, "L2")
			o.Secret.LeaseID, o.Confirmed = "L2", true
		}, now: t0.Add(26 * time.Second), action: ActWait, sources: []string{"-", "-"}, check: func(t *testing.T, p Plan) {
			if sp := p.Sources[0]; !sp.Promote || sp.DropPending || sp.Previous != PreviousWait {
				t.Fatalf("plan %+v, want promote with the replaced lease waiting for its grace period", sp)
			}
		}},
		{name: "Secret write failed (it holds the old lease): the pending one is dropped and issued again; the old stays current", mutate: func(o *Observed) {
			pendingSource(o, 0, "L2")
			o.Confirmed = true
		}, now: t0.Add(26 * time.Second), action: ActFetch, sources: []string{"r", "-"}, check: func(t *testing.T, p Plan) {
			if sp := p.Sources[0]; !sp.DropPending || sp.Promote || sp.ReleaseStale || sp.Previous != PreviousWait {
				t.Fatalf("plan %+v: the lease the Secret holds must stay current", sp)
			}
		}},
		{name: "Secret write failing: pending dropped, read again at the back-off only", mutate: func(o *Observed) {
			pendingSource(o, 0, "L2")
			o.Confirmed = true
			failing(o, t0.Add(25*time.Second), t0.Add(30*time.Second))
		}, now: t0.Add(26 * time.Second), action: ActWait, sources: []string{"-", "-"}, check: func(t *testing.T, p Plan) {
			if !p.Sources[0].DropPending {
				t.Fatalf("plan %+v", p.Sources[0])
			}
		}, wakeDue: t0.Add(30 * time.Second)},
		{name: "replaced lease due once the Secret holds the new: revoked", mutate: func(o *Observed) {
			l := o.VS.Status.Sources[0].Lease
			l.PreviousID, l.RevokePreviousAt, l.PreviousExpiresAt = "L0", ptrTime(t0.Add(10*time.Second)), ptrTime(t0.Add(time.Minute))
		}, now: t0.Add(11 * time.Second), action: ActWait, sources: []string{"-", "-"}, check: func(t *testing.T, p Plan) {
			if p.Sources[0].Previous != PreviousRevoke || p.Sources[1].Previous != PreviousWait {
				t.Fatalf("previous %d %d, want revoke for source 0 only", p.Sources[0].Previous, p.Sources[1].Previous)
			}
		}},
		{name: "data written by the pass whose lease is promoted: not an edit", mutate: func(o *Observed) {
			pendingSource(o, 0, "L2")
			o.Secret.LeaseID, o.Confirmed, o.Data = "L2", true, DataEdited
		}, now: t0.Add(26 * time.Second), action: ActWait, check: func(t *testing.T, p Plan) {
			if p.Restore || !p.AdoptHMAC {
				t.Fatalf("plan %+v, want the data adopted, no restore", p)
			}
		}},
		{name: "no Secret: every source read", mutate: func(o *Observed) { o.Secret, o.Confirmed = nil, true }, now: t0.Add(time.Second),
			action: ActFetch, sources: []string{"r", "r"}},
		{name: "spec changed: every source read", mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Sources[1].KV.Path = "app/other" })
		}, now: t0.Add(time.Second), action: ActFetch, sources: []string{"r", "r"}},
		{name: "edited by hand: restore every source", mutate: func(o *Observed) { o.Data = DataEdited }, now: t0.Add(time.Second),
			action: ActFetch, sources: []string{"r", "r"}, check: func(t *testing.T, p Plan) {
				if !p.Restore {
					t.Fatal("not a restore")
				}
			}},
		{name: "status written without one source's schedule: only that one read", mutate: func(o *Observed) {
			o.VS.Status.Sources[1].Hash = "older"
		}, now: t0.Add(time.Second), action: ActFetch, sources: []string{"-", "r"}},
		{name: "a template key shadows a key of the dynamic source: it is read (issued) whenever another is", mutate: func(o *Observed) {
			o.VS.Spec.Target.Template = map[string]string{"password": "p={{ .password }}"}
			o.VS.Status.Sources[0].Lease.ExpiresAt = metav1.NewTime(t0.Add(10 * time.Minute))
			o.SourceHash = sourceHash(o.VS)
			o.VS.Status.SourceHash = o.SourceHash
		}, now: kvRefresh.Add(time.Second), action: ActFetch, sources: []string{"r", "r"}},
		{name: "a template key shadows a key of the kv source: a renewal alone renders nothing, reads nothing", mutate: func(o *Observed) {
			o.VS.Spec.Target.Template = map[string]string{"apiKey": "k={{ .apiKey }}"}
			o.SourceHash = sourceHash(o.VS)
			o.VS.Status.SourceHash = o.SourceHash
		}, now: t0.Add(21 * time.Second), action: ActRenew, sources: []string{"n", "-"}},
		{name: "source 0 changed from dynamic to kv: its leases released", mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) {
				vs.Spec.Sources[0] = v1alpha1.Source{KV: &v1alpha1.KVSource{Mount: "secret", Path: "app/db"}}
			})
		}, now: t0.Add(time.Second), action: ActFetch, sources: []string{"r", "r"}, check: func(t *testing.T, p Plan) {
			if !p.Sources[0].ReleaseStale || p.Sources[1].ReleaseStale {
				t.Fatalf("plan %+v", p.Sources)
			}
		}},
		{name: "dynamic source removed from the list: its journal released", mutate: func(o *Observed) {
			specEdit(o, func(vs *v1alpha1.VaultSecret) { vs.Spec.Sources = vs.Spec.Sources[1:] })
			o.VS.Status.Sources[0], o.VS.Status.Sources[1] = o.VS.Status.Sources[1], o.VS.Status.Sources[0]
		}, now: t0.Add(time.Second), action: ActFetch, sources: []string{"r", "-"}, check: func(t *testing.T, p Plan) {
			if len(p.Sources) != 2 || !p.Sources[1].ReleaseStale || p.Sources[0].ReleaseStale {
				t.Fatalf("plan %+v: the removed source's journal must be released", p.Sources)
			}
		}},
		{name: "Secret lacks a current lease in its annotation: metadata rewritten", mutate: func(o *Observed) {
			o.Secret.LeaseID = ""
		}, now: t0.Add(5 * time.Second), action: ActWriteMetadata, sources: []string{"-", "-"}},
		{name: "invalid spec: replaced leases still revoked when due, nothing read", mutate: func(o *Observed) {
			o.Invalid = errors.New("bad")
			l := o.VS.Status.Sources[0].Lease
			l.PreviousID, l.RevokePreviousAt, l.PreviousExpiresAt = "L0", ptrTime(t0.Add(10*time.Second)), ptrTime(t0.Add(time.Minute))
		}, now: t0.Add(11 * time.Second), action: ActInvalid, sources: []string{"-", "-"}, check: func(t *testing.T, p Plan) {
			if p.Sources[0].Previous != PreviousRevoke {
				t.Fatalf("previous %d", p.Sources[0].Previous)
			}
		}},
		{name: "renewal failing: wait for the back-off", mutate: func(o *Observed) { failing(o, t0.Add(20*time.Second), t0.Add(25*time.Second)) },
			now: t0.Add(22 * time.Second), action: ActWait, sources: []string{"-", "-"}, wakeDue: t0.Add(25 * time.Second)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := sourcesFixture()
			tc.mutate(&o)
			p := Decide(o, tc.now)
			if p.Action != tc.action {
				t.Fatalf("action %s (%s), want %s", p.Action, p.Why, tc.action)
			}
			if tc.sources != nil && !slices.Equal(planOf(p)[:len(tc.sources)], tc.sources) {
				t.Fatalf("sources %v (%s), want %v", planOf(p), p.Why, tc.sources)
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

// TestDecideSwitchToOneSource: spec.sources replaced by spec.source
// releases every source's journal.
func TestDecideSwitchToOneSource(t *testing.T) {
	o := sourcesFixture()
	specEdit(&o, func(vs *v1alpha1.VaultSecret) {
		vs.Spec.Source, vs.Spec.Sources = vs.Spec.Sources[1], nil
	})
	o.Kind = "kv"
	p := Decide(o, t0.Add(time.Second))
	if p.Action != ActFetch || len(p.Sources) != 2 || !p.Sources[0].ReleaseStale || p.Sources[1].ReleaseStale {
		t.Fatalf("plan %s %+v: source 0's lease must be released", p.Action, p.Sources)
	}
}

// TestFinalizeEverySource: deletion revokes every lease of every journal
// (pending, current and replaced, of spec.source and of each source,
// removed ones included) and waits no longer than the latest of them.
func TestFinalizeEverySource(t *testing.T) {
	o := sourcesFixture()
	st := &o.VS.Status
	pendingSource(&o, 0, "L2")
	st.Sources[0].Lease.PreviousID, st.Sources[0].Lease.PreviousExpiresAt = "L0", ptrTime(t0.Add(time.Minute))
	st.Sources = append(st.Sources, v1alpha1.SourceStatus{Hash: "removed", LeaseJournal: v1alpha1.LeaseJournal{Lease: &v1alpha1.Lease{ID: "R1",
		IssuedAt: metav1.NewTime(t0), ExpiresAt: metav1.NewTime(t0.Add(90 * time.Second))}}})
	st.Lease = &v1alpha1.Lease{ID: "S1", IssuedAt: metav1.NewTime(t0), ExpiresAt: metav1.NewTime(t0.Add(40 * time.Second))}
	now := t0.Add(5 * time.Second)
	var ids []string
	for _, l := range allJournalIDs(st, now) {
		ids = append(ids, l.ID)
	}
	slices.Sort(ids)
	if want := []string{"L0", "L1", "L2", "R1", "S1"}; !slices.Equal(ids, want) {
		t.Fatalf("deletion revokes %v, want %v", ids, want)
	}
	if end := journalEnd(st); !end.Equal(t0.Add(90 * time.Second)) {
		t.Fatalf("journal end %s, want the removed source's lease end", end.Sub(t0))
	}
	if DecideFinalize(now, len(ids) > 0, true, journalEnd(st)) != FinalizeRelease {
		t.Fatal("deletion does not wait for the revocations")
	}
	// Past every lease's end nothing is left to revoke.
	if ids := allJournalIDs(st, t0.Add(2*time.Minute)); len(ids) != 0 {
		t.Fatalf("ended leases still to revoke: %v", ids)
	}
}

// TestLeaseAnnotation: the Secret names each dynamic source's lease;
// holding is by whole id.
func TestLeaseAnnotation(t *testing.T) {
	a := joinLeases([]string{"database/creds/app/abc", "database/creds/ro/def"})
	if !holdsLease(a, "database/creds/ro/def") || holdsLease(a, "database/creds/ro/de") || holdsLease(a, "") {
		t.Fatalf("holdsLease over %q", a)
	}
	if !holdsAll(a, nil) || holdsAll(a, []string{"database/creds/app/abc", "x"}) {
		t.Fatal("holdsAll")
	}
	o := sourcesFixture()
	o.VS.Status.Sources[0].PendingLease = &v1alpha1.Lease{ID: "L2"}
	if got := currentLeases(o.VS); !slices.Equal(got, []string{"L1"}) {
		t.Fatalf("current leases %v: a pending lease is not current", got)
	}
}
