// Package gates runs the checks that stand between a rotated Transit key
// and raising its min_decryption_version: the API server gate (every API
// server on the target key_id for the settle time, failing closed), the
// prefix sanity check, and the whole-prefix scan whose evidence must show
// no value of the key below the target version. `kubectl vaultkms trim` and
// the autopilot in vaultkms-auditor both call Trim, so they refuse on the
// same grounds; the decisions themselves are pure functions in
// verifier/rotation and verifier/apiservers.
//
// A refusal is a *rotation.GateError naming the gate; any other error is a
// failure to read etcd, Vault or an API server.
package gates

import (
	"context"
	"errors"
	"time"

	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/verifier/apiservers"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rotation"
	"github.com/vaultkms/vaultkms/verifier/scan"
	"github.com/vaultkms/vaultkms/verifier/storedvalue"
)

// Gates holds what the checks read.
type Gates struct {
	// KV reads etcd (read-only access is enough).
	KV     scan.KV
	Prefix string
	// Provider is the KMS v2 provider name the API servers report.
	Provider string
	// Reports reads every API server's key_id reports (apiservers.Fetch
	// of a discovered or given list).
	Reports func(ctx context.Context) ([]apiservers.Report, error)
	Clock   clock.PassiveClock
	// Progress and OnRestart are passed to the scan.
	Progress  func(resource string, done int)
	OnRestart func(rev int64)
}

func (g *Gates) now() time.Time {
	if g.Clock == nil {
		return time.Now()
	}
	return g.Clock.Now()
}

// APIServers is the API server gate at this moment: every API server
// reports keyID as its newest and has not reported another one for settle.
// Anything that cannot be read refuses.
func (g *Gates) APIServers(ctx context.Context, keyID string, settle time.Duration) ([]apiservers.Server, error) {
	reports, err := g.Reports(ctx)
	if err != nil {
		return nil, rotation.Refuse(rotation.GateAPIServers, err)
	}
	servers, err := apiservers.Check(reports, g.Provider, keyID, settle, g.now())
	if err != nil {
		return servers, rotation.Refuse(rotation.GateAPIServers, err)
	}
	return servers, nil
}

// ScanWhole checks the prefix (namespaces/default must exist) and scans
// every key under it, whatever its resource, gathering which versions of
// tk's key etcd still holds.
func (g *Gates) ScanWhole(ctx context.Context, tk keysource.TransitKey) (scan.Report, rotation.Evidence, error) {
	if err := scan.CheckPrefix(ctx, g.KV, g.Prefix); err != nil {
		var wp *scan.WrongPrefixError
		if errors.As(err, &wp) {
			return scan.Report{}, rotation.Evidence{}, rotation.Refuse(rotation.GatePrefix, err)
		}
		return scan.Report{}, rotation.Evidence{}, err
	}
	var ev rotation.Evidence
	rep, err := scan.Run(ctx, g.KV, scan.Options{Prefix: g.Prefix, Provider: g.Provider, CurrentKeyID: tk.Current.String(),
		Progress: g.Progress,
		OnRestart: func(rev int64) {
			ev = rotation.Evidence{}
			if g.OnRestart != nil {
				g.OnRestart(rev)
			}
		},
		Visit: func(_ string, key []byte, v storedvalue.Value, _ bool) { ev.Add(string(key), v, tk.Current) },
	})
	return rep, ev, err
}

// Verify scans the whole prefix and refuses unless no value of tk's key
// needs a version below to and at least one value of the key was found.
func (g *Gates) Verify(ctx context.Context, tk keysource.TransitKey, to int) (scan.Report, rotation.Evidence, error) {
	rep, ev, err := g.ScanWhole(ctx, tk)
	if err != nil {
		return rep, ev, err
	}
	return rep, ev, rotation.CheckEvidence(ev, tk.Current, to, false)
}

// Proof is what Trim checked.
type Proof struct {
	Revision   int64               `json:"revision"`
	Evidence   rotation.Evidence   `json:"evidence"`
	APIServers []apiservers.Server `json:"apiServers"`
}

// Trim checks, in order, every gate for raising tk's min_decryption_version
// to to: the API server gate, the whole-prefix scan, and the API server
// gate again with the same API servers. It changes nothing.
func (g *Gates) Trim(ctx context.Context, tk keysource.TransitKey, to int, settle time.Duration, allowNoEvidence bool) (Proof, error) {
	keyID := tk.Current.String()
	facts := rotation.TrimFacts{Current: tk.Current, MinDecryptionVersion: tk.MinDecryption, AllowNoEvidence: allowNoEvidence}
	// Gate 1: every API server on the target key_id for the settle time.
	before, gateErr := g.APIServers(ctx, keyID, settle)
	if gateErr != nil {
		facts.APIServers = gateErr
		return Proof{APIServers: before}, rotation.CheckTrim(facts, to)
	}
	// Gate 2: the whole prefix, every resource.
	rep, ev, err := g.ScanWhole(ctx, tk)
	if err != nil {
		return Proof{APIServers: before}, err
	}
	facts.Evidence = ev
	// Gate 3: the same API servers, still on the target key_id.
	after, gateErr := g.APIServers(ctx, keyID, settle)
	if gateErr == nil {
		if err := apiservers.Same(before, after); err != nil {
			gateErr = rotation.Refuse(rotation.GateAPIServers, err)
		}
	}
	facts.APIServers = gateErr
	p := Proof{Revision: rep.Revision, Evidence: ev, APIServers: after}
	return p, rotation.CheckTrim(facts, to)
}
