// Package rotation decides where a Transit key rotation stands and what the
// operator should do next. Everything here is a pure function of facts
// gathered elsewhere, so every stage is table-tested.
package rotation

import (
	"fmt"
	"sort"

	"github.com/vaultkms/vaultkms/internal/transitkey"
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
)

// Facts are the inputs to Decide.
type Facts struct {
	// CurrentKeyID is the key_id of the Transit key's latest version.
	CurrentKeyID string
	// MinDecryptionVersion is the Transit key's setting.
	MinDecryptionVersion int
	// APIServersKnown is false when no API server metrics were read.
	APIServersKnown bool
	// APIServersAgree is true when every API server reports CurrentKeyID.
	APIServersAgree bool
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
	if target > f.MinDecryptionVersion && f.Stale == 0 {
		d.TrimTo = target
	}
	switch {
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
		d.NextAction = fmt.Sprintf("run `kubectl vaultkms trim` to raise min_decryption_version from %d to %d", max(1, f.MinDecryptionVersion), d.TrimTo)
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

// CheckTrim says whether min_decryption_version may be raised to to.
func CheckTrim(f Facts, to int) error {
	cur, err := transitkey.ParseKeyID(f.CurrentKeyID)
	if err != nil {
		return fmt.Errorf("cannot tell the current key_id: %w", err)
	}
	if f.APIServersKnown && !f.APIServersAgree {
		return fmt.Errorf("not every API server reports the current key_id yet; one may still write under an older version")
	}
	if f.Stale > 0 {
		return fmt.Errorf("%d objects are stale (%d in plaintext or another provider's hands): run `kubectl vaultkms reencrypt` first", f.Stale, f.Plaintext)
	}
	if to > cur.Version {
		return fmt.Errorf("version %d does not exist yet; the latest is %d", to, cur.Version)
	}
	if low := LowestVersionInUse(f.ByKeyID, cur); low > 0 && low < to {
		return fmt.Errorf("objects still need version %d", low)
	}
	if to <= f.MinDecryptionVersion {
		return fmt.Errorf("min_decryption_version is already %d", f.MinDecryptionVersion)
	}
	return nil
}
