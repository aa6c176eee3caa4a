package syncer

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestKVPlan(t *testing.T) {
	cases := []struct {
		name           string
		ttl            time.Duration
		jitter         float64
		refresh, expir time.Duration
	}{
		{"no jitter", 30 * time.Second, 0, 20 * time.Second, 30 * time.Second},
		{"full jitter", 30 * time.Second, 0.999999, 17 * time.Second, 30 * time.Second},
		{"one hour", time.Hour, 0.5, 40*time.Minute - 3*time.Minute, time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, e := KVPlan(t0, tc.ttl, tc.jitter)
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

func TestRevokeAtAndExpiry(t *testing.T) {
	if got := RevokeAt(t0, 30*time.Second, nil); got != t0.Add(3*time.Second) {
		t.Fatalf("default grace: %s", got.Sub(t0))
	}
	g := 10 * time.Second
	if got := RevokeAt(t0, 30*time.Second, &g); got != t0.Add(10*time.Second) {
		t.Fatalf("configured grace: %s", got.Sub(t0))
	}
	if Expired(t0, time.Time{}) || Expired(t0, t0.Add(time.Second)) || !Expired(t0, t0) {
		t.Fatal("Expired")
	}
	if got := NextWake(time.Time{}, t0.Add(time.Minute), t0.Add(time.Second)); got != t0.Add(time.Second) {
		t.Fatalf("NextWake = %s", got)
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
