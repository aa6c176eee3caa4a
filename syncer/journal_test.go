package syncer

import (
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// TestJournalKeepsTheIssuingVault: a lease keeps the Vault that issued it
// through every slot of the journal, so that it is revoked only there.
func TestJournalKeepsTheIssuingVault(t *testing.T) {
	var j v1alpha1.LeaseJournal
	eu := &TenantToken{Accessor: "a1", Vault: "eu@1111"}
	us := &TenantToken{Accessor: "a2", Vault: "eu@2222"}
	recordPending(&j, fetched{leaseID: "L1", leaseDuration: time.Hour}, eu, t0)
	if dropped := recordPending(&j, fetched{leaseID: "L2", leaseDuration: time.Hour}, eu, t0); dropped != (leaseRef{"L1", "eu@1111"}) {
		t.Fatalf("dropped pending lease %+v, want L1 of eu@1111", dropped)
	}
	promote(&j, t0, nil)
	if j.Lease.Vault != "eu@1111" {
		t.Fatalf("current lease of %q, want eu@1111", j.Lease.Vault)
	}
	// The connection's address changes: the next lease is the other Vault's.
	recordPending(&j, fetched{leaseID: "L3", leaseDuration: time.Hour}, us, t0.Add(time.Minute))
	promote(&j, t0.Add(time.Minute), nil)
	if j.Lease.Vault != "eu@2222" || j.Lease.PreviousID != "L2" || j.Lease.PreviousVault != "eu@1111" {
		t.Fatalf("lease %+v: want L3 of eu@2222 replacing L2 of eu@1111", j.Lease)
	}
	recordPending(&j, fetched{leaseID: "L4", leaseDuration: time.Hour}, us, t0.Add(2*time.Minute))
	if older := promote(&j, t0.Add(2*time.Minute), nil); older != (leaseRef{"L2", "eu@1111"}) {
		t.Fatalf("replaced twice within the grace period: %+v, want L2 of eu@1111", older)
	}
	refs := journalIDs(&j, t0.Add(2*time.Minute))
	if len(refs) != 2 || refs[0] != (leaseRef{"L4", "eu@2222"}) || refs[1] != (leaseRef{"L3", "eu@2222"}) {
		t.Fatalf("leases to revoke at deletion: %+v", refs)
	}
	clearPrevious(&j)
	if j.Lease.PreviousVault != "" {
		t.Fatalf("a cleared previous lease keeps its Vault: %+v", j.Lease)
	}
}

// TestNoReleaseOfALeaseOfAnotherVault: the lease id is not sent with a
// token of another Vault; the client here points nowhere, so a request
// would fail differently.
func TestNoReleaseOfALeaseOfAnotherVault(t *testing.T) {
	v := &vaultIO{}
	tok := &TenantToken{Vault: "cluster-b"}
	err := v.releaseRef(t.Context(), tok, leaseRef{"database/creds/app/x", "cluster-a"})
	if _, ok := err.(*issuedElsewhereError); !ok {
		t.Fatalf("error %v, want the lease refused as another Vault's", err)
	}
	for _, c := range []struct {
		issuedBy, now string
		want          bool
	}{
		{"cluster-a", "cluster-a", false},
		{"cluster-a", "cluster-a/team-a", true},
		{"", "cluster-a", false},
		{"cluster-a", "", false},
	} {
		if got := elsewhere(c.issuedBy, c.now); got != c.want {
			t.Errorf("elsewhere(%q, %q) = %v, want %v", c.issuedBy, c.now, got, c.want)
		}
	}
}
