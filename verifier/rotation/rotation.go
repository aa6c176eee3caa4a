// Package rotation decides where a Transit key rotation stands and what the
// operator should do next. Everything here is a pure function of facts
// gathered elsewhere, so every stage is table-tested.
package rotation

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

// Stage is where a rotation stands.
type Stage string

const (
	// Current: every object is under the current key_id and no older
	// version is left to retire.
	Current Stage = "current"
	// AwaitingAPIServers: Vault has a newer version than some API server
	// reports; new writes are not all under it yet.
	AwaitingAPIServers Stage = "rotated-awaiting-api-servers"
	// Migrating: API servers use the current key_id but objects under
	// older ones (or plaintext) remain.
	Migrating Stage = "migrating"
	// Migrated: every object is under the current key_id; older versions
	// can still decrypt and can be trimmed.
	Migrated Stage = "migrated"
	// NoEvidence: the scan found nothing at all, which proves nothing: a
	// wrong --etcd-prefix or the wrong etcd looks exactly like this.
	NoEvidence Stage = "no-evidence"
)

// NeedsAction tells whether the operator has something to do at s.
func (s Stage) NeedsAction() bool { return s != Current }

// Facts are the inputs to Decide.
type Facts struct {
	// CurrentKeyID is the key_id of the Transit key's latest version.
	CurrentKeyID string
	// MinDecryptionVersion is the Transit key's setting; 0 when Vault was
	// not asked (the key_id came from the plugin or a flag).
	MinDecryptionVersion int
	// APIServersKnown is false when no API server metrics were read.
	APIServersKnown bool
	// APIServersAgree is true when every API server reports CurrentKeyID.
	APIServersAgree bool
	// Scanned is the number of objects the scan read.
	Scanned int
	// Plaintext and Stale are totals across the scanned resources (stale
	// includes plaintext).
	Plaintext, Stale int
	// ByKeyID counts objects per stored key_id across resources.
	ByKeyID map[string]int
}

// Decision is Decide's answer.
type Decision struct {
	Stage      Stage  `json:"stage"`
	NextAction string `json:"nextAction"`
	// LowestVersionInUse is the oldest version of this key any scanned
	// object needs; 0 when none does.
	LowestVersionInUse int `json:"lowestVersionInUse"`
	// TrimTo is the min_decryption_version trim would set; 0 when there
	// is nothing to trim.
	TrimTo int `json:"trimTo"`
}

// Decide names the stage and the next action.
func Decide(f Facts) Decision {
	cur, err := transitkey.ParseKeyID(f.CurrentKeyID)
	if err != nil {
		return Decision{Stage: Migrating, NextAction: "cannot tell the current key_id: " + err.Error()}
	}
	lowest := LowestVersionInUse(f.ByKeyID, cur)
	d := Decision{LowestVersionInUse: lowest}
	target := cur.Version
	if lowest > 0 && lowest < target {
		target = lowest
	}
	minKnown := f.MinDecryptionVersion > 0
	// Vault's default min_decryption_version is 1: version 1 has nothing
	// below it to retire.
	if minKnown && target > f.MinDecryptionVersion && f.Stale == 0 {
		d.TrimTo = target
	}
	switch {
	case f.Scanned == 0:
		d.Stage = NoEvidence
		d.NextAction = "the scan found no objects at all, which proves nothing: check --etcd-endpoints and --etcd-prefix, and that the resources scanned exist"
	case f.APIServersKnown && !f.APIServersAgree:
		d.Stage = AwaitingAPIServers
		d.NextAction = "wait until every API server reports the new key_id (kube-apiserver polls the plugin every minute), then run `kubectl vaultkms reencrypt`"
	case f.Stale > 0:
		d.Stage = Migrating
		if f.Plaintext > 0 {
			d.NextAction = fmt.Sprintf("run `kubectl vaultkms reencrypt`: %d objects are stale, %d of them in plaintext", f.Stale, f.Plaintext)
		} else {
			d.NextAction = fmt.Sprintf("run `kubectl vaultkms reencrypt`: %d objects are under an older key_id", f.Stale)
		}
	case d.TrimTo > 0:
		d.Stage = Migrated
		d.NextAction = fmt.Sprintf("run `kubectl vaultkms trim` to raise min_decryption_version from %d to %d", f.MinDecryptionVersion, d.TrimTo)
	case !minKnown && cur.Version > 1:
		// Without Vault's min_decryption_version nobody can tell
		// "migrated, trim pending" from "current".
		d.Stage = Current
		d.NextAction = "nothing is stale; give --vault-addr and --transit-key to learn whether older key versions can be trimmed"
	default:
		d.Stage = Current
		d.NextAction = "nothing to do"
	}
	return d
}

// LowestVersionInUse returns the oldest version of cur's key that any
// counted key_id names, or 0.
func LowestVersionInUse(byKeyID map[string]int, cur transitkey.KeyID) int {
	lowest := 0
	for id, n := range byKeyID {
		if n == 0 {
			continue
		}
		k, err := transitkey.ParseKeyID(id)
		if err != nil || !k.SameKey(cur) {
			continue
		}
		if lowest == 0 || k.Version < lowest {
			lowest = k.Version
		}
	}
	return lowest
}

// VersionCounts sums objects per version of cur's key, oldest first.
func VersionCounts(byKeyID map[string]int, cur transitkey.KeyID) [][2]int {
	m := map[int]int{}
	for id, n := range byKeyID {
		if k, err := transitkey.ParseKeyID(id); err == nil && k.SameKey(cur) {
			m[k.Version] += n
		}
	}
	out := make([][2]int, 0, len(m))
	for v, n := range m {
		out = append(out, [2]int{v, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// Evidence is what a scan of the whole --etcd-prefix found of one Transit
// key, whatever the resource: the proof trim relies on.
type Evidence struct {
	// Versions counts KMS v2 values whose key_id names the key, per
	// version.
	Versions map[int]int `json:"versions"`
	// Unreadable counts the values trim cannot tell the key of, so they
	// might need any version: KMS v1 values (their wrapped key names no
	// Transit version), and KMS v2 values whose key_id is missing or not
	// in the vaultkms format.
	Unreadable int `json:"unreadable"`
	// UnreadableKeys names the first MaxListed of them (etcd keys), so the
	// operator can find them.
	UnreadableKeys []string `json:"unreadableKeys,omitempty"`
	// OtherKeys counts KMS v2 values under other vaultkms keys (not this
	// key's concern).
	OtherKeys int `json:"otherKeys"`
	// Total counts every key scanned.
	Total int `json:"total"`
}

// MaxListed bounds the etcd keys an Evidence lists per kind of problem.
const MaxListed = 20

// Add records one scanned value stored at etcd key.
func (e *Evidence) Add(key string, v storedvalue.Value, cur transitkey.KeyID) {
	e.Total++
	switch v.Kind {
	case storedvalue.KMSv1:
		e.unreadable(key)
		return
	case storedvalue.KMSv2:
	default:
		return
	}
	k, err := transitkey.ParseKeyID(v.KeyID)
	if err != nil {
		// Empty, or another plugin's format: it could be this key under
		// a spelling vaultkms never wrote, so it is no evidence either way.
		e.unreadable(key)
		return
	}
	if !k.SameKey(cur) {
		e.OtherKeys++
		return
	}
	if e.Versions == nil {
		e.Versions = map[int]int{}
	}
	e.Versions[k.Version]++
}

func (e *Evidence) unreadable(key string) {
	e.Unreadable++
	if len(e.UnreadableKeys) < MaxListed {
		e.UnreadableKeys = append(e.UnreadableKeys, key)
	}
}

// Found is the number of values under this key.
func (e Evidence) Found() int {
	n := 0
	for _, c := range e.Versions {
		n += c
	}
	return n
}

// TrimFacts are the inputs to CheckTrim.
type TrimFacts struct {
	Current              transitkey.KeyID
	MinDecryptionVersion int
	// Evidence is from a scan of the whole prefix, made after the API
	// server gate passed.
	Evidence Evidence
	// AllowNoEvidence lets trim go ahead when no value under this key was
	// found (the operator says the key encrypts nothing).
	AllowNoEvidence bool
	// APIServers is the API server gate's verdict; nil when it passed.
	APIServers error
}

// Gate names one of the checks a trim (or the autopilot) must pass.
type Gate string

// The gates, in the order they are checked.
const (
	GateAPIServers Gate = "APIServers"
	GateVersion    Gate = "Version"
	GateNothing    Gate = "NothingToTrim"
	GatePrefix     Gate = "Prefix"
	GateUnreadable Gate = "UnreadableKeyID"
	GateStale      Gate = "StaleObjects"
	GateNoEvidence Gate = "NoEvidence"
)

// GateError is a refusal by one gate. Its text is the cause and the fix;
// Gate says which check refused.
type GateError struct {
	Gate Gate
	Err  error
}

func (e *GateError) Error() string { return e.Err.Error() }
func (e *GateError) Unwrap() error { return e.Err }

// Refuse wraps err as a refusal by gate g.
func Refuse(g Gate, err error) error { return &GateError{Gate: g, Err: err} }

// GateOf returns the gate that refused in err's chain, or "".
func GateOf(err error) Gate {
	var ge *GateError
	if errors.As(err, &ge) {
		return ge.Gate
	}
	return ""
}

// CheckTrim says whether min_decryption_version may be raised to to. It
// fails closed: anything unknown refuses. A refusal is a *GateError.
func CheckTrim(f TrimFacts, to int) error {
	if f.APIServers != nil {
		return Refuse(GateAPIServers, fmt.Errorf("API server gate: %w", f.APIServers))
	}
	if to > f.Current.Version {
		return Refuse(GateVersion, fmt.Errorf("version %d does not exist yet; the latest is %d", to, f.Current.Version))
	}
	if to <= max(1, f.MinDecryptionVersion) {
		return Refuse(GateNothing, fmt.Errorf("min_decryption_version is already %d: nothing to trim", max(1, f.MinDecryptionVersion)))
	}
	return CheckEvidence(f.Evidence, f.Current, to, f.AllowNoEvidence)
}

// CheckEvidence says whether a whole-prefix scan proves that no value of
// cur's key needs a version below to: nothing unreadable, nothing below,
// and something found (unless allowNoEvidence).
func CheckEvidence(ev Evidence, cur transitkey.KeyID, to int, allowNoEvidence bool) error {
	if ev.Unreadable > 0 {
		more := ""
		if ev.Unreadable > len(ev.UnreadableKeys) {
			more = fmt.Sprintf(" and %d more", ev.Unreadable-len(ev.UnreadableKeys))
		}
		return Refuse(GateUnreadable, fmt.Errorf("%d values in etcd are KMS v1 or KMS v2 with a key_id not in the %s format, so no scan can say which Transit version they need: %s%s; rewrite them through the API server under this key (or remove them) before trimming",
			ev.Unreadable, transitkey.KeyIDPrefix, strings.Join(ev.UnreadableKeys, ", "), more))
	}
	var below []string
	n := 0
	for _, v := range sortedInts(ev.Versions) {
		if v < to {
			below = append(below, fmt.Sprintf("v%d=%d", v, ev.Versions[v]))
			n += ev.Versions[v]
		}
	}
	if n > 0 {
		return Refuse(GateStale, fmt.Errorf("%d objects in etcd still need versions below %d (%v): run `kubectl vaultkms reencrypt` for every resource under this key first", n, to, below))
	}
	if ev.Found() == 0 && !allowNoEvidence {
		return Refuse(GateNoEvidence, fmt.Errorf("no value in etcd is encrypted under %s/%s (%d keys scanned): that is no evidence, not proof; check --etcd-endpoints and --etcd-prefix, or pass --allow-no-evidence if the key really encrypts nothing", cur.Mount, cur.Key, ev.Total))
	}
	return nil
}

func sortedInts(m map[int]int) []int {
	out := make([]int, 0, len(m))
	for v := range m {
		out = append(out, v)
	}
	sort.Ints(out)
	return out
}
