package syncer

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

func TestWriteRecordOpensOnlyForItsWrite(t *testing.T) {
	key, other := []byte("key-1"), []byte("key-2")
	data := map[string][]byte{"password": []byte("p1")}
	rec := WriteRecord{SourceHash: "s1", LastSync: t0.Unix(), RefreshAt: t0.Add(time.Minute).Unix()}
	sealed := sealRecord(key, "uid-1", rec, data)
	tampered := strings.Replace(sealed, `"r":`+strconv.FormatInt(rec.RefreshAt, 10), `"r":`+strconv.FormatInt(rec.RefreshAt+3600, 10), 1)
	if tampered == sealed {
		t.Fatal("the tampering did not change the record")
	}
	cases := []struct {
		name  string
		key   []byte
		uid   types.UID
		value string
		data  map[string][]byte
		ok    bool
	}{
		{"its own write", key, "uid-1", sealed, data, true},
		{"data edited beside it", key, "uid-1", sealed, map[string][]byte{"password": []byte("p2")}, false},
		{"a key added beside it", key, "uid-1", sealed, map[string][]byte{"password": []byte("p1"), "x": nil}, false},
		{"copied to another VaultSecret's Secret", key, "uid-2", sealed, data, false},
		{"HMAC key recreated", other, "uid-1", sealed, data, false},
		{"record edited", key, "uid-1", tampered, data, false},
		{"not a record", key, "uid-1", "v1;x", data, false},
		{"empty", key, "uid-1", "", data, false},
	}
	for _, tc := range cases {
		got, ok := openRecord(tc.key, tc.uid, tc.value, tc.data)
		if ok != tc.ok {
			t.Errorf("%s: opened %v, want %v", tc.name, ok, tc.ok)
		}
		if ok && (got.SourceHash != rec.SourceHash || got.RefreshAt != rec.RefreshAt) {
			t.Errorf("%s: opened %+v, want %+v", tc.name, got, rec)
		}
	}
	if strings.Contains(sealed, "p1") {
		t.Fatalf("the record holds a value: %s", sealed)
	}
}

func TestWriteRecordUnrecorded(t *testing.T) {
	rec := WriteRecord{SourceHash: "s1", LastSync: t0.Add(10 * time.Second).Unix()}
	cases := []struct {
		name   string
		st     v1alpha1.VaultSecretStatus
		source string
		data   string
		want   bool
	}{
		{"status holds an older write", v1alpha1.VaultSecretStatus{SourceHash: "s1", DataHMAC: "old", LastSyncTime: ptrTime(t0)}, "s1", "new", true},
		{"status holds nothing (the first write)", v1alpha1.VaultSecretStatus{}, "s1", "new", true},
		{"status holds this write", v1alpha1.VaultSecretStatus{SourceHash: "s1", DataHMAC: "new", LastSyncTime: ptrTime(t0.Add(10 * time.Second))}, "s1", "new", false},
		{"the same data read for a new spec (force-sync)", v1alpha1.VaultSecretStatus{SourceHash: "s0", DataHMAC: "new", LastSyncTime: ptrTime(t0)}, "s1", "new", true},
		{"an older write put back (status holds a later one)", v1alpha1.VaultSecretStatus{SourceHash: "s1", DataHMAC: "later", LastSyncTime: ptrTime(t0.Add(time.Minute))}, "s1", "new", false},
		{"written for a spec since changed", v1alpha1.VaultSecretStatus{SourceHash: "s1", DataHMAC: "old", LastSyncTime: ptrTime(t0)}, "s2", "new", false},
	}
	for _, tc := range cases {
		if got := rec.unrecorded(&tc.st, tc.source, tc.data); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWriteRecordRestore(t *testing.T) {
	since := t0.Add(10 * time.Second)
	rec := WriteRecord{SourceHash: "s1", MetadataHash: "m1", LastSync: since.Unix(), RefreshAt: since.Add(time.Minute).Unix(),
		ExpiresAt: since.Add(2 * time.Minute).Unix(), RestartPending: since.Unix(),
		Sources: []SourceRecord{{Hash: "a", Keys: []string{"user"}, LastSync: since.Unix()}, {Hash: "b", Keys: []string{"tls.crt"}, LastSync: since.Unix()}}}
	st := v1alpha1.VaultSecretStatus{DataHMAC: "old", SourceHash: "s1", LastSyncTime: ptrTime(t0),
		Sources: []v1alpha1.SourceStatus{{Hash: "a", LeaseJournal: v1alpha1.LeaseJournal{PendingLease: &v1alpha1.Lease{ID: "L2"}}}}}
	rec.restore(&st, "new", "app", 3)
	switch {
	case st.DataHMAC != "new" || st.SecretName != "app" || st.AppliedGeneration != 3 || st.SourceHash != "s1" || st.MetadataHash != "m1":
		t.Fatalf("status %+v", st)
	case !st.LastSyncTime.Time.Equal(since) || !st.RefreshAt.Time.Equal(since.Add(time.Minute)) || !st.ExpiresAt.Time.Equal(since.Add(2*time.Minute)):
		t.Fatalf("schedule %v %v %v", st.LastSyncTime, st.RefreshAt, st.ExpiresAt)
	case st.RestartPendingSince == nil || !st.RestartPendingSince.Time.Equal(since):
		t.Fatalf("the restarts the write owes are not recorded: %v", st.RestartPendingSince)
	case len(st.Sources) != 2 || st.Sources[1].Keys[0] != "tls.crt" || st.Sources[0].PendingLease == nil:
		t.Fatalf("sources %+v: each source's keys recorded, its journal kept", st.Sources)
	case !meta.IsStatusConditionTrue(st.Conditions, "Ready"):
		t.Fatalf("conditions %+v", st.Conditions)
	}
	// A restart owed since later than the write stays.
	later := ptrTime(t0.Add(time.Hour))
	st.RestartPendingSince = later
	rec.restore(&st, "new", "app", 3)
	if !st.RestartPendingSince.Time.Equal(later.Time) {
		t.Fatalf("a later owed restart was replaced: %v", st.RestartPendingSince)
	}
}
