package syncer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// WriteRecordAnnotation is on every Secret the controller writes data to:
// what the pass that wrote it records in status once the write is
// answered (when the data was read, for which spec, when it is read next
// and expires), sealed with the data HMAC key over the VaultSecret's UID
// and the data. A pass whose status write is lost after its Secret write
// landed (an API server that failed once, a controller that ended) leaves
// the Secret ahead of status; the next pass finds the record, takes the
// write as its own and records it, instead of calling the data edited by
// hand and reading Vault again (for pki: issuing another certificate).
// The record names hashes, times and key names, never values.
const WriteRecordAnnotation = "secrets.vaultkms.io/write-record"

// writeRecordVersion starts a record's annotation; the key id, the seal
// and the record's JSON follow, separated by ';'.
const writeRecordVersion = "v1"

// WriteRecord is what a data write records in status. Times are Unix
// seconds, the precision status keeps. The JSON names are one or two
// letters: the record rides on every Secret write and watch event.
type WriteRecord struct {
	SourceHash   string `json:"s"`
	MetadataHash string `json:"m,omitempty"`
	LastSync     int64  `json:"t"`
	RefreshAt    int64  `json:"r,omitempty"`
	ExpiresAt    int64  `json:"e,omitempty"`
	// RestartPending is the status.restartPendingSince the write set: the
	// rollout restarts its new data owes.
	RestartPending int64 `json:"p,omitempty"`
	// Sources is each of spec.sources' schedule and keys.
	Sources []SourceRecord `json:"src,omitempty"`
}

// SourceRecord is one of spec.sources' part of a WriteRecord.
type SourceRecord struct {
	Hash      string   `json:"h"`
	Keys      []string `json:"k,omitempty"`
	LastSync  int64    `json:"t,omitempty"`
	RefreshAt int64    `json:"r,omitempty"`
	ExpiresAt int64    `json:"e,omitempty"`
}

func unixOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func unixOfPtr(t *metav1.Time) int64 { return unixOf(timeOf(t)) }

func timeOfUnix(s int64) *metav1.Time {
	if s == 0 {
		return nil
	}
	t := metav1.NewTime(time.Unix(s, 0).UTC())
	return &t
}

// sealRecord is the annotation value of rec for data written for the
// VaultSecret of uid.
func sealRecord(key []byte, uid types.UID, rec WriteRecord, data map[string][]byte) string {
	// Marshalling this plain struct cannot fail.
	body, _ := json.Marshal(rec)
	return writeRecordVersion + ";" + hmacKeyID(key) + ";" + recordSeal(key, uid, body, data) + ";" + string(body)
}

func recordSeal(key []byte, uid types.UID, body []byte, data map[string][]byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("vaultkms write record\x00"))
	m.Write([]byte(uid))
	m.Write([]byte{0})
	m.Write(body)
	m.Write([]byte{0})
	m.Write([]byte(rawHMAC(key, data)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// openRecord checks a record annotation against the key, the VaultSecret
// and the data the Secret holds: only a record this controller sealed for
// exactly that data and that VaultSecret is returned. A record of another
// key (recreated), of another VaultSecret, or beside edited data is not.
func openRecord(key []byte, uid types.UID, value string, data map[string][]byte) (WriteRecord, bool) {
	parts := strings.SplitN(value, ";", 4)
	if len(parts) != 4 || parts[0] != writeRecordVersion || parts[1] != hmacKeyID(key) {
		return WriteRecord{}, false
	}
	if !hmac.Equal([]byte(parts[2]), []byte(recordSeal(key, uid, []byte(parts[3]), data))) {
		return WriteRecord{}, false
	}
	var rec WriteRecord
	if err := json.Unmarshal([]byte(parts[3]), &rec); err != nil || rec.SourceHash == "" || rec.LastSync == 0 {
		return WriteRecord{}, false
	}
	return rec, true
}

// unrecorded tells whether rec, opened from the Secret, is a write status
// does not hold: made for the spec as it is now (sourceHash), not older
// than the last sync status records (a copy of an older Secret put back
// is an edit, restored from Vault), and with data or a spec status has
// not recorded. dataHMAC is that of the Secret's data.
func (rec WriteRecord) unrecorded(st *v1alpha1.VaultSecretStatus, sourceHash, dataHMAC string) bool {
	if rec.SourceHash != sourceHash || rec.LastSync < unixOfPtr(st.LastSyncTime) {
		return false
	}
	return st.DataHMAC != dataHMAC || st.SourceHash != rec.SourceHash
}

// restore records rec in st as the pass that wrote it would have, had
// its status write landed: the data's HMAC, the schedule, the hashes and,
// when the write owed rollout restarts, that they are owed. Lease journals
// are left alone: a pending lease the Secret holds is promoted by its own
// rule.
func (rec WriteRecord) restore(st *v1alpha1.VaultSecretStatus, dataHMAC, secretName string, generation int64) {
	st.DataHMAC, st.SecretName = dataHMAC, secretName
	st.LastSyncTime, st.RefreshAt, st.ExpiresAt = timeOfUnix(rec.LastSync), timeOfUnix(rec.RefreshAt), timeOfUnix(rec.ExpiresAt)
	st.SourceHash, st.MetadataHash, st.AppliedGeneration = rec.SourceHash, rec.MetadataHash, generation
	if rec.RestartPending > unixOfPtr(st.RestartPendingSince) {
		st.RestartPendingSince = timeOfUnix(rec.RestartPending)
	}
	for len(st.Sources) < len(rec.Sources) {
		st.Sources = append(st.Sources, v1alpha1.SourceStatus{})
	}
	for i, sr := range rec.Sources {
		ss := &st.Sources[i]
		ss.Hash, ss.Keys = sr.Hash, sr.Keys
		ss.LastSyncTime, ss.RefreshAt, ss.ExpiresAt = timeOfUnix(sr.LastSync), timeOfUnix(sr.RefreshAt), timeOfUnix(sr.ExpiresAt)
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: ReasonSynced,
		ObservedGeneration: generation, LastTransitionTime: *timeOfUnix(rec.LastSync), Message: recoveredMessage(secretName, rec)})
}

func recoveredMessage(secretName string, rec WriteRecord) string {
	msg := "Secret \"" + secretName + "\" synced"
	if rec.ExpiresAt != 0 {
		msg += "; expires at " + formatTime(time.Unix(rec.ExpiresAt, 0))
	}
	return msg + " (recorded from the Secret's write record: the status write of the pass that wrote it was lost)"
}

// passRecord is the record of a data write of spec.source made now.
func passRecord(o *observation, now, refreshAt, expiresAt, restartSince time.Time) WriteRecord {
	return WriteRecord{SourceHash: o.SourceHash, MetadataHash: o.MetadataHash, LastSync: now.Unix(),
		RefreshAt: unixOf(refreshAt), ExpiresAt: unixOf(expiresAt), RestartPending: unixOf(restartSince)}
}

// restartOwedAt is the status.restartPendingSince new data written now
// sets: none when it changes nothing for the pods or has no targets.
func restartOwedAt(vs *v1alpha1.VaultSecret, changed bool, now time.Time) time.Time {
	if !changed || len(vs.Spec.RolloutRestartTargets) == 0 {
		return time.Time{}
	}
	// Status keeps whole seconds: the time asked for is the one read back.
	return now.Truncate(time.Second)
}
