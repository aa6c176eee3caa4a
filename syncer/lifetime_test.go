package syncer

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestKVPlan(t *testing.T) {
	cases := []struct {
		name           string
		ttl, interval  time.Duration
		jitter         float64
		refresh, expir time.Duration
	}{
		{"no jitter", 30 * time.Second, 0, 0, 20 * time.Second, 30 * time.Second},
		{"full jitter", 30 * time.Second, 0, 0.999999, 17 * time.Second, 30 * time.Second},
		{"one hour", time.Hour, 0, 0.5, 40*time.Minute - 3*time.Minute, time.Hour},
		{"refreshInterval, no jitter", time.Hour, 5 * time.Minute, 0, 5 * time.Minute, time.Hour},
		{"refreshInterval, half jitter", time.Hour, 10 * time.Minute, 0.5, 10*time.Minute - 30*time.Second, time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, e := KVPlan(t0, tc.ttl, tc.interval, tc.jitter)
			if got := r.Sub(t0).Round(time.Second); got != tc.refresh {
				t.Errorf("refresh after %s, want %s", got, tc.refresh)
			}
			if e.Sub(t0) != tc.expir {
				t.Errorf("expires after %s, want %s", e.Sub(t0), tc.expir)
			}
		})
	}
}

func TestPKIPlan(t *testing.T) {
	r, e := PKIPlan(t0, t0.Add(90*time.Second), 0)
	if r != t0.Add(60*time.Second) || e != t0.Add(90*time.Second) {
		t.Fatalf("PKIPlan = %s, %s", r, e)
	}
}

func TestDecideLease(t *testing.T) {
	base := LeaseFacts{IssuedAt: t0, RenewedAt: t0, ExpiresAt: t0.Add(30 * time.Second), Renewable: true, Wanted: 2 * time.Minute}
	cases := []struct {
		name   string
		now    time.Time
		mutate func(*LeaseFacts)
		action LeaseAction
		wake   time.Time
	}{
		{"fresh lease waits until two thirds", t0.Add(5 * time.Second), func(*LeaseFacts) {}, LeaseWait, t0.Add(20 * time.Second)},
		{"due and renewable: renew", t0.Add(21 * time.Second), func(*LeaseFacts) {}, LeaseRenew, t0.Add(21 * time.Second)},
		{"renewed lease waits again", t0.Add(25 * time.Second), func(f *LeaseFacts) { f.RenewedAt, f.ExpiresAt = t0.Add(21*time.Second), t0.Add(51*time.Second) }, LeaseWait, t0.Add(41 * time.Second)},
		{"renewal cut short by max TTL: reissue", t0.Add(45 * time.Second), func(f *LeaseFacts) {
			f.RenewedAt, f.ExpiresAt, f.CutShort = t0.Add(21*time.Second), t0.Add(50*time.Second), true
		}, LeaseReissue, t0.Add(45 * time.Second)},
		{"token ends first: due at two thirds of the token's life", t0.Add(5 * time.Second), func(f *LeaseFacts) { f.TokenExpiresAt = t0.Add(15 * time.Second); f.TokenLive = true }, LeaseWait, t0.Add(10 * time.Second)},
		{"token-bound lease, token still held: renew", t0.Add(11 * time.Second), func(f *LeaseFacts) { f.TokenExpiresAt = t0.Add(15 * time.Second); f.TokenLive = true }, LeaseRenew, t0.Add(11 * time.Second)},
		{"token-bound lease, token lost (restart): reissue", t0.Add(11 * time.Second), func(f *LeaseFacts) { f.TokenExpiresAt = t0.Add(15 * time.Second) }, LeaseReissue, t0.Add(11 * time.Second)},
		{"token outlives the lease, token lost: renew", t0.Add(21 * time.Second), func(f *LeaseFacts) { f.TokenExpiresAt = t0.Add(time.Hour) }, LeaseRenew, t0.Add(21 * time.Second)},
		{"no token recorded: reissue at once", t0.Add(time.Second), func(f *LeaseFacts) { f.TokenUnknown = true }, LeaseReissue, t0.Add(time.Second)},
		{"not renewable: reissue when due", t0.Add(21 * time.Second), func(f *LeaseFacts) { f.Renewable = false }, LeaseReissue, t0.Add(21 * time.Second)},
		{"wanted lifetime reached: reissue", t0.Add(2*time.Minute + time.Second), func(f *LeaseFacts) {
			f.RenewedAt, f.ExpiresAt = t0.Add(100*time.Second), t0.Add(130*time.Second)
		}, LeaseReissue, t0.Add(2*time.Minute + time.Second)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			tc.mutate(&f)
			a, wake := DecideLease(tc.now, f, 0)
			if a != tc.action || !wake.Equal(tc.wake) {
				t.Fatalf("DecideLease = %d at %s, want %d at %s", a, wake.Sub(t0), tc.action, tc.wake.Sub(t0))
			}
		})
	}
}

func TestRenewalCutShort(t *testing.T) {
	if RenewalCutShort(30*time.Second, 30*time.Second) || RenewalCutShort(30*time.Second, 29*time.Second+500*time.Millisecond) {
		t.Fatal("a full renewal reported as cut short")
	}
	if !RenewalCutShort(30*time.Second, 12*time.Second) {
		t.Fatal("a renewal capped by max TTL not detected")
	}
}

func TestRevokeAt(t *testing.T) {
	g := 10 * time.Second
	zero := time.Duration(0)
	cases := []struct {
		name   string
		oldEnd time.Time
		grace  *time.Duration
		want   time.Time
	}{
		{"default grace covers kubelet propagation", t0.Add(time.Hour), nil, t0.Add(2 * time.Minute)},
		{"configured grace", t0.Add(time.Hour), &g, t0.Add(10 * time.Second)},
		{"zero grace: at once", t0.Add(time.Hour), &zero, t0},
		{"never after the old lease's end", t0.Add(30 * time.Second), nil, t0.Add(30 * time.Second)},
	}
	for _, tc := range cases {
		if got := RevokeAt(t0, tc.oldEnd, tc.grace); !got.Equal(tc.want) {
			t.Errorf("%s: RevokeAt = %s, want %s", tc.name, got.Sub(t0), tc.want.Sub(t0))
		}
	}
	if Expired(t0, time.Time{}) || Expired(t0, t0.Add(time.Second)) || !Expired(t0, t0) {
		t.Fatal("Expired")
	}
	if got := NextWake(time.Time{}, t0.Add(time.Minute), t0.Add(time.Second)); got != t0.Add(time.Second) {
		t.Fatalf("NextWake = %s", got)
	}
}

func TestDecidePrevious(t *testing.T) {
	cases := []struct {
		name          string
		now           time.Time
		revokeAt, end time.Time
		want          PreviousAction
	}{
		{"before its time", t0, t0.Add(time.Second), t0.Add(time.Minute), PreviousWait},
		{"due", t0.Add(time.Second), t0.Add(time.Second), t0.Add(time.Minute), PreviousRevoke},
		{"past the old lease's end: nothing to revoke", t0.Add(time.Minute), t0.Add(time.Second), t0.Add(time.Minute), PreviousForget},
		{"end unknown: revoke when due", t0.Add(time.Hour), t0, time.Time{}, PreviousRevoke},
	}
	for _, tc := range cases {
		if got := DecidePrevious(tc.now, tc.revokeAt, tc.end); got != tc.want {
			t.Errorf("%s: DecidePrevious = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestRevokeBackoff(t *testing.T) {
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, w := range want {
		if got := RevokeBackoff(int32(i + 1)); got != w {
			t.Errorf("RevokeBackoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	if RevokeBackoff(1000) != 5*time.Minute {
		t.Fatal("no cap")
	}
}

func TestDecideFinalize(t *testing.T) {
	cases := []struct {
		name          string
		hasLease, opt bool
		end           time.Time
		want          FinalizeAction
	}{
		{"no lease", false, true, time.Time{}, FinalizeDone},
		{"opted out", true, false, t0.Add(time.Hour), FinalizeDone},
		{"lease already ended", true, true, t0, FinalizeDone},
		{"live lease", true, true, t0.Add(time.Second), FinalizeRelease},
	}
	for _, tc := range cases {
		if got := DecideFinalize(t0, tc.hasLease, tc.opt, tc.end); got != tc.want {
			t.Errorf("%s: DecideFinalize = %d, want %d", tc.name, got, tc.want)
		}
	}
	if d := FinalizeRetryAfter(t0, t0, t0.Add(time.Hour)); d != 5*time.Second {
		t.Fatalf("first retry after %s", d)
	}
	if d := FinalizeRetryAfter(t0, t0, t0.Add(3*time.Second)); d != 0 {
		t.Fatalf("retrying past the lease's end: %s", d)
	}
}

func TestEffectiveEnd(t *testing.T) {
	if got := EffectiveEnd(t0.Add(time.Hour), t0.Add(time.Minute)); got != t0.Add(time.Minute) {
		t.Fatal("token ending first not taken")
	}
	if got := EffectiveEnd(t0.Add(time.Minute), t0.Add(time.Hour)); got != t0.Add(time.Minute) {
		t.Fatal("lease ending first not taken")
	}
	if got := EffectiveEnd(t0.Add(time.Minute), time.Time{}); got != t0.Add(time.Minute) {
		t.Fatal("a non-expiring token bounds nothing")
	}
}

func TestRetryAfter(t *testing.T) {
	cases := []struct {
		name                  string
		failingFor, expiresIn time.Duration
		want                  time.Duration
	}{
		{"first failure", 0, 0, 5 * time.Second},
		{"failing for a minute", time.Minute, 0, 30 * time.Second},
		{"failing for hours is capped", 3 * time.Hour, 0, 5 * time.Minute},
		{"expiry comes first", time.Minute, 10 * time.Second, 10 * time.Second},
		{"already expired: back-off only", time.Minute, -time.Second, 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var since, exp time.Time
			if tc.failingFor > 0 {
				since = t0.Add(-tc.failingFor)
			}
			if tc.expiresIn != 0 {
				exp = t0.Add(tc.expiresIn)
			}
			if got := RetryAfter(t0, since, exp); got != tc.want {
				t.Fatalf("RetryAfter = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFailingSince(t *testing.T) {
	since := metav1.NewTime(t0.Add(-time.Hour))
	cases := []struct {
		name  string
		ready *metav1.Condition
		want  time.Time
	}{
		{"never synced", nil, time.Time{}},
		{"ready", &metav1.Condition{Status: metav1.ConditionTrue, ObservedGeneration: 2, LastTransitionTime: since}, time.Time{}},
		{"failing, this spec", &metav1.Condition{Status: metav1.ConditionFalse, ObservedGeneration: 2, LastTransitionTime: since}, since.Time},
		{"failing, an older spec", &metav1.Condition{Status: metav1.ConditionFalse, ObservedGeneration: 1, LastTransitionTime: since}, time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := FailingSince(tc.ready, 2); !got.Equal(tc.want) {
				t.Errorf("FailingSince = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestOutliveCancel pins what a pass that has started issuing credentials
// gets when the process is told to stop: the rest of its grace, not an
// immediate cancellation, and no deadline at all before that.
func TestOutliveCancel(t *testing.T) {
	parent, stopParent := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	ctx, cancel := outliveCancel(parent, 50*time.Millisecond)
	defer cancel()
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("a deadline before any shutdown")
	}
	if ctx.Value(ctxKey{}) != "v" {
		t.Fatal("values of the parent lost")
	}
	stopParent()
	if err := ctx.Err(); err != nil {
		t.Fatalf("ended with its parent: %v", err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5 s after its parent ended; want the 50 ms grace")
	}

	// Canceled by its own cancel, it ends at once.
	ctx2, cancel2 := outliveCancel(context.Background(), time.Hour)
	cancel2()
	if ctx2.Err() == nil {
		t.Fatal("its own cancel did not end it")
	}
}

type ctxKey struct{}
