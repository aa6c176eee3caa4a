// Package publisher scans etcd on a schedule inside vaultkms-auditor and
// publishes the result as the cluster-scoped EncryptionStatus "cluster",
// with Prometheus metrics and events when objects become stale or
// plaintext.
package publisher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/version"
	"github.com/vaultkms/vaultkms/verifier/rotation"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// Name is the one EncryptionStatus the publisher owns.
const Name = "cluster"

// KeySource tells the current key_id (from the plugin, Vault or a flag).
type KeySource func(ctx context.Context) (string, error)

// MinInterval is the shortest time between scans: each scan reads all of
// etcd's prefix, so a typo such as --scan-interval=1ms must not turn the
// auditor into a load generator.
const MinInterval = 5 * time.Second

// CheckInterval refuses an interval below MinInterval.
func CheckInterval(d time.Duration) error {
	if d < MinInterval {
		return fmt.Errorf("--scan-interval %s is below the floor of %s: every scan reads the whole of etcd's prefix", d, MinInterval)
	}
	return nil
}

// NextDelay is the wait before the next scan: the interval plus up to a
// tenth more, so several auditors (or restarts) do not scan in step.
// jitter is a number in [0, 1).
func NextDelay(interval time.Duration, jitter float64) time.Duration {
	interval = max(interval, MinInterval)
	return interval + time.Duration(jitter*float64(interval)/10)
}

// Publisher is a manager Runnable.
type Publisher struct {
	Client    client.Client
	KV        scan.KV
	Options   scan.Options
	Key       KeySource
	Interval  time.Duration
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	Log       logr.Logger
	Metrics   *Metrics
	lastStale int
	lastPlain int
}

// Start scans at once and then every Interval until ctx ends.
func (p *Publisher) Start(ctx context.Context) error {
	if p.Clock == nil {
		p.Clock = clock.RealClock{}
	}
	for {
		if err := p.ScanOnce(ctx); err != nil && ctx.Err() == nil {
			p.Log.Error(err, "encryption scan failed")
		}
		t := time.NewTimer(NextDelay(p.Interval, rand.Float64()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// NeedLeaderElection: one replica scans.
func (p *Publisher) NeedLeaderElection() bool { return true }

// ScanOnce scans and publishes.
func (p *Publisher) ScanOnce(ctx context.Context) error {
	start := p.Clock.Now()
	keyID, err := p.Key(ctx)
	var rep scan.Report
	if err == nil {
		opts := p.Options
		opts.CurrentKeyID = keyID
		rep, err = scan.Run(ctx, p.KV, opts)
	}
	if p.Metrics != nil {
		p.Metrics.observe(rep, err, p.Clock.Since(start))
	}
	status := Build(rep, err, p.Clock.Now())
	if perr := p.publish(ctx, status); perr != nil {
		return perr
	}
	if err != nil {
		return err
	}
	p.emitEvents(status)
	return nil
}

// Build turns a scan (or its failure) into the published status. It is a
// pure function of its inputs.
func Build(rep scan.Report, scanErr error, now time.Time) v1alpha1.EncryptionStatusStatus {
	var st v1alpha1.EncryptionStatusStatus
	if scanErr != nil {
		msg := "scan failed: " + scanErr.Error()
		for _, t := range []string{v1alpha1.ConditionEncrypted, v1alpha1.ConditionKeyCurrent} {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: metav1.ConditionUnknown, Reason: v1alpha1.ReasonScanFailed, Message: msg, LastTransitionTime: metav1.NewTime(now)})
		}
		return st
	}
	at := metav1.NewTime(rep.ScannedAt)
	st.CurrentKeyID, st.Revision, st.ScannedAt = rep.CurrentKeyID, rep.Revision, &at
	for _, r := range rep.Resources {
		st.Total += r.Total
		st.Plaintext += r.Plaintext
		st.Stale += r.Stale
		st.Current += r.Current
		st.Resources = append(st.Resources, v1alpha1.ResourceEncryption{Resource: r.Resource, Total: r.Total, Plaintext: r.Plaintext, Stale: r.Stale, Current: r.Current, ByProvider: r.ByProvider, ByKeyID: r.ByKeyID})
	}
	d := rotation.Decide(rotation.Facts{CurrentKeyID: rep.CurrentKeyID, Scanned: st.Total, Plaintext: st.Plaintext, Stale: st.Stale, ByKeyID: rep.ByKeyID()})
	st.RotationStage, st.NextAction = string(d.Stage), d.NextAction
	if d.Stage == rotation.NoEvidence {
		for _, t := range []string{v1alpha1.ConditionEncrypted, v1alpha1.ConditionKeyCurrent} {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: metav1.ConditionUnknown, Reason: v1alpha1.ReasonNoEvidence, Message: d.NextAction, LastTransitionTime: metav1.NewTime(now)})
		}
		return st
	}
	enc := metav1.Condition{Type: v1alpha1.ConditionEncrypted, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonEncryptionCompleted,
		Message: fmt.Sprintf("all %d objects are encrypted", st.Total), LastTransitionTime: metav1.NewTime(now)}
	if st.Plaintext > 0 {
		enc.Status, enc.Reason, enc.Message = metav1.ConditionFalse, v1alpha1.ReasonPlaintextFound, fmt.Sprintf("%d of %d objects are stored in plaintext; run `kubectl vaultkms reencrypt`", st.Plaintext, st.Total)
	}
	cur := metav1.Condition{Type: v1alpha1.ConditionKeyCurrent, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonEncryptionCompleted,
		Message: "every object is under the current key_id", LastTransitionTime: metav1.NewTime(now)}
	if st.Stale > 0 {
		cur.Status, cur.Reason, cur.Message = metav1.ConditionFalse, v1alpha1.ReasonMigrating, fmt.Sprintf("%d of %d objects are not under the current key_id; run `kubectl vaultkms reencrypt`", st.Stale, st.Total)
	}
	meta.SetStatusCondition(&st.Conditions, enc)
	meta.SetStatusCondition(&st.Conditions, cur)
	return st
}

func (p *Publisher) publish(ctx context.Context, st v1alpha1.EncryptionStatusStatus) error {
	var es v1alpha1.EncryptionStatus
	err := p.Client.Get(ctx, client.ObjectKey{Name: Name}, &es)
	if apierrors.IsNotFound(err) {
		es = v1alpha1.EncryptionStatus{ObjectMeta: metav1.ObjectMeta{Name: Name}}
		if err := p.Client.Create(ctx, &es); err != nil {
			return fmt.Errorf("create EncryptionStatus %q: %w", Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("get EncryptionStatus %q: %w", Name, err)
	}
	// Keep transition times of conditions whose status did not change.
	for i := range st.Conditions {
		if old := meta.FindStatusCondition(es.Status.Conditions, st.Conditions[i].Type); old != nil && old.Status == st.Conditions[i].Status {
			st.Conditions[i].LastTransitionTime = old.LastTransitionTime
		}
		st.Conditions[i].ObservedGeneration = es.Generation
	}
	es.Status = st
	if err := p.Client.Status().Update(ctx, &es); err != nil {
		return fmt.Errorf("update EncryptionStatus %q status: %w", Name, err)
	}
	return nil
}

// emitEvents records an event when stale or plaintext objects appear.
func (p *Publisher) emitEvents(st v1alpha1.EncryptionStatusStatus) {
	if p.Recorder == nil {
		return
	}
	ref := &v1alpha1.EncryptionStatus{ObjectMeta: metav1.ObjectMeta{Name: Name}}
	ref.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("EncryptionStatus"))
	if st.Plaintext > 0 && p.lastPlain == 0 {
		p.Recorder.Eventf(ref, nil, corev1.EventTypeWarning, v1alpha1.ReasonPlaintextFound, "Scan", "%d objects are stored in plaintext", st.Plaintext)
	}
	if st.Stale > st.Plaintext && p.lastStale <= p.lastPlain {
		p.Recorder.Eventf(ref, nil, corev1.EventTypeNormal, v1alpha1.ReasonMigrating, "Scan", "%d objects are under an older key_id", st.Stale-st.Plaintext)
	}
	p.lastStale, p.lastPlain = st.Stale, st.Plaintext
}

// Metrics are the publisher's Prometheus metrics.
type Metrics struct {
	objects  *prometheus.GaugeVec
	duration prometheus.Histogram
	last     *prometheus.GaugeVec
}

// NewMetrics registers the publisher's metrics (vaultkms_auditor_*) and
// the auditor's vaultkms_auditor_build_info.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vaultkms_auditor_encryption_objects",
			Help: "Objects in etcd at the last scan, by resource and state (current, stale, plaintext).",
		}, []string{"resource", "state"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vaultkms_auditor_scan_duration_seconds", Help: "Duration of etcd scans; exported from the start, so its _count shows the auditor is scraped.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vaultkms_auditor_scan_last_timestamp_seconds", Help: "When the last scan ended, by result.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.objects, m.duration, m.last, version.BuildInfo("auditor", version.Version))
	return m
}

func (m *Metrics) observe(rep scan.Report, err error, took time.Duration) {
	m.duration.Observe(took.Seconds())
	if err != nil {
		m.last.WithLabelValues("error").SetToCurrentTime()
		return
	}
	m.last.WithLabelValues("ok").SetToCurrentTime()
	for _, r := range rep.Resources {
		m.objects.WithLabelValues(r.Resource, "current").Set(float64(r.Current))
		m.objects.WithLabelValues(r.Resource, "stale").Set(float64(r.Stale - r.Plaintext))
		m.objects.WithLabelValues(r.Resource, "plaintext").Set(float64(r.Plaintext))
	}
}
