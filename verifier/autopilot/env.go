package autopilot

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/internal/transitkey"
	"github.com/vaultkms/vaultkms/internal/vault"
	"github.com/vaultkms/vaultkms/verifier/apiservers"
	"github.com/vaultkms/vaultkms/verifier/gates"
	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rewrite"
	"github.com/vaultkms/vaultkms/verifier/rotation"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// LiveEnv is the Env of vaultkms-auditor.
type LiveEnv struct {
	// Vault is a client logged in with the auditor's rotation identity
	// (a vault.Session keeps its token), allowed only to read, rotate and
	// configure the one Transit key.
	Vault *api.Client
	// Session, when set, keeps Vault's token; steps wait for its first
	// login.
	Session *vault.Session
	// KV reads etcd read-only.
	KV     scan.KV
	Prefix string
	// Targets are the resources the EncryptionConfiguration puts under
	// the provider: the ones re-encrypted.
	Targets []scan.Target
	// ScannedKey is the key_id the auditor scans for (its --transit-key,
	// plugin or --current-key-id); a policy must name that key.
	ScannedKey func(ctx context.Context) (string, error)
	// Kube is the auditor's API server connection: metrics for the API
	// server gate, and the no-op updates that re-encrypt.
	Kube    *rest.Config
	Workers int
	Clock   clock.PassiveClock
	// TestOnlySettle, when positive, replaces every policy's settle time
	// and lifts its minimum: the auditor's hidden test flag sets it so
	// the e2e tests need not wait minutes. A RotationPolicy cannot reach
	// it.
	TestOnlySettle time.Duration

	once    sync.Once
	dyn     dynamic.Interface
	mapper  meta.RESTMapper
	initErr error
}

func (e *LiveEnv) vault(s Settings) *api.Client {
	if s.Namespace == "" {
		return e.Vault
	}
	return e.Vault.WithNamespace(s.Namespace)
}

// Key reads the Transit key.
func (e *LiveEnv) Key(ctx context.Context, s Settings) (keysource.TransitKey, error) {
	if e.Session != nil {
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := e.Session.WaitReady(wctx)
		cancel()
		if err != nil {
			return keysource.TransitKey{}, fmt.Errorf("no Vault token for the rotation identity yet (%s): %w", e.Session.State().Reason, err)
		}
	}
	return keysource.FromVault(ctx, e.vault(s), s.Namespace, s.Mount, s.Key)
}

// Rotate rotates the Transit key.
func (e *LiveEnv) Rotate(ctx context.Context, s Settings) error {
	mount := transitkey.NormalizeMount(s.Mount)
	_, err := e.vault(s).Logical().WriteWithContext(ctx, mount+"/keys/"+s.Key+"/rotate", nil)
	return vault.Wrap(fmt.Sprintf("rotate transit key %q", mount+"/"+s.Key), err)
}

// SetMinDecryption raises min_decryption_version against the key as
// Vault holds it just before the write (transitkey.RaiseMinDecryption).
func (e *LiveEnv) SetMinDecryption(ctx context.Context, s Settings, latest, to int) (transitkey.Trim, error) {
	return transitkey.RaiseMinDecryption(ctx, e.vault(s), s.Mount, s.Key, latest, to)
}

func (e *LiveEnv) gates(s Settings) *gates.Gates {
	return &gates.Gates{KV: e.KV, Prefix: e.Prefix, Provider: s.Provider, Clock: e.Clock,
		Reports: func(ctx context.Context) ([]apiservers.Report, error) {
			urls := s.MetricsURLs
			if len(urls) == 0 {
				kube, err := kubernetes.NewForConfig(e.Kube)
				if err != nil {
					return nil, err
				}
				if urls, err = apiservers.Discover(ctx, kube); err != nil {
					return nil, err
				}
			}
			return apiservers.Fetch(ctx, e.Kube, urls)
		}}
}

// Preflight checks the API server gate's times, the prefix, the key and
// that etcd holds values under it.
func (e *LiveEnv) Preflight(ctx context.Context, s Settings, tk keysource.TransitKey) error {
	if e.TestOnlySettle == 0 {
		// Before rotating, not at the gate: a timeout the gate cannot meet
		// would stop the cycle only after the key was rotated. The CRD
		// refuses it when both fields are set; a timeout set beside the
		// default settle time (or the reverse) is caught here.
		if err := apiservers.CheckSettle("spec.apiServers.settleTime", s.Settle); err != nil {
			return rotation.Refuse(rotation.GateAPIServers, err)
		}
		if err := apiservers.CheckTimeout("spec.apiServers.timeout", s.Timeout, s.Settle); err != nil {
			return rotation.Refuse(rotation.GateAPIServers, err)
		}
	}
	if e.ScannedKey != nil {
		id, err := e.ScannedKey(ctx)
		if err != nil {
			return fmt.Errorf("the key the auditor scans: %w", err)
		}
		k, err := transitkey.ParseKeyID(id)
		if err != nil {
			return fmt.Errorf("the key the auditor scans: %w", err)
		}
		if !k.SameKey(tk.Current) {
			return rotation.Refuse(GateKeyMismatch, fmt.Errorf("the policy names %s/%s (namespace %q) but the auditor scans for %s/%s (namespace %q)",
				tk.Current.Mount, tk.Current.Key, tk.Current.Namespace, k.Mount, k.Key, k.Namespace))
		}
	}
	_, ev, err := e.gates(s).ScanWhole(ctx, tk)
	if err != nil {
		return err
	}
	// Version 1 has nothing below it: only unreadable values and an empty
	// scan refuse here.
	return rotation.CheckEvidence(ev, tk.Current, 1, false)
}

// settle is the policy's settle time, refused below the API server's
// rules (the CRD refuses it first; this holds for a CRD not yet upgraded).
func (e *LiveEnv) settle(s Settings) (time.Duration, error) {
	if e.TestOnlySettle > 0 {
		return e.TestOnlySettle, nil
	}
	if err := apiservers.CheckSettle("spec.apiServers.settleTime", s.Settle); err != nil {
		return 0, rotation.Refuse(rotation.GateAPIServers, err)
	}
	return s.Settle, nil
}

// APIServers is the API server gate now.
func (e *LiveEnv) APIServers(ctx context.Context, s Settings, tk keysource.TransitKey) error {
	settle, err := e.settle(s)
	if err != nil {
		return err
	}
	_, err = e.gates(s).APIServers(ctx, tk.Current.String(), settle)
	return err
}

// Reencrypt scans the encrypted resources and rewrites what is stale.
func (e *LiveEnv) Reencrypt(ctx context.Context, s Settings, tk keysource.TransitKey) (ReencryptResult, error) {
	e.once.Do(func() { e.dyn, e.mapper, e.initErr = rewrite.Clients(e.Kube, float64(1000)) })
	if e.initErr != nil {
		return ReencryptResult{}, e.initErr
	}
	stale := rewrite.NewStaleSet(e.Prefix)
	rep, err := scan.Run(ctx, e.KV, scan.Options{Prefix: e.Prefix, Targets: e.Targets, Provider: s.Provider, CurrentKeyID: tk.Current.String(),
		Visit: stale.Visit, OnRestart: func(int64) { stale.Reset() }})
	if err != nil {
		return ReencryptResult{}, err
	}
	if err := stale.Err(); err != nil {
		return ReencryptResult{}, err
	}
	var names []string
	for _, r := range rep.Resources {
		names = append(names, r.Resource)
	}
	results, err := rewrite.Stale(ctx, rewrite.Config{Client: e.dyn, Mapper: e.mapper, Limiter: rate.NewLimiter(rate.Limit(s.QPS), s.Burst),
		Workers: e.Workers, FieldManager: "vaultkms-auditor"}, names, stale)
	var out ReencryptResult
	for _, r := range results {
		out.Stale += r.Stale
		out.Rewritten += r.Rewritten
		out.Gone += r.Gone
		out.Failed += r.Failed
		for _, m := range r.Errors {
			out.Errors = append(out.Errors, r.Resource+" "+m)
		}
	}
	if len(out.Errors) > 5 {
		out.Errors = append(out.Errors[:5], fmt.Sprintf("and %d more", len(out.Errors)-5))
	}
	return out, err
}

// Verify scans the whole prefix.
func (e *LiveEnv) Verify(ctx context.Context, s Settings, tk keysource.TransitKey, to int) error {
	_, _, err := e.gates(s).Verify(ctx, tk, to)
	return err
}

// TrimGates checks every gate of trim.
func (e *LiveEnv) TrimGates(ctx context.Context, s Settings, tk keysource.TransitKey, to int) error {
	settle, err := e.settle(s)
	if err != nil {
		return err
	}
	_, err = e.gates(s).Trim(ctx, tk, to, settle, false)
	return err
}
