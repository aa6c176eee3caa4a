package autopilot

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vaultkms/verifier/keysource"
	"github.com/vaultkms/vaultkms/verifier/rotation"
)

// TestPreflightRefusesGateTimesBeforeRotating: a timeout the API server
// gate cannot meet, or a settle time below kube-apiserver's rules, stops
// the cycle before the key is rotated, not at the gate after it. The
// LiveEnv has no etcd or Vault: the refusal must come before either.
func TestPreflightRefusesGateTimesBeforeRotating(t *testing.T) {
	for _, tc := range []struct {
		name            string
		settle, timeout time.Duration
		want            string
	}{
		// The CRD cannot see this one: timeout set, settleTime defaulted.
		{"timeout beside the default settle time", DefaultSettle, 6 * time.Minute, "spec.apiServers.timeout 6m0s is too short"},
		{"settle time defaulted timeout", 20 * time.Minute, DefaultTimeout, "spec.apiServers.timeout 15m0s is too short for a settle time of 20m0s"},
		{"settle time below the minimum", 3 * time.Minute, DefaultTimeout, "spec.apiServers.settleTime 3m0s is too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &LiveEnv{}
			err := e.Preflight(context.Background(), Settings{Settle: tc.settle, Timeout: tc.timeout}, keysource.TransitKey{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || rotation.GateOf(err) != rotation.GateAPIServers {
				t.Fatalf("Preflight = %v (gate %q), want the API server gate refusing with %q", err, rotation.GateOf(err), tc.want)
			}
		})
	}
}
