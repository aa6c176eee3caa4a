package logging

import (
	"slices"

	"github.com/go-logr/logr"
)

// Lazy returns log with its key-value pairs attached when a line is
// written, not when they are added. controller-runtime adds the object's
// kind, namespace, name and a reconcile ID to a logger for every pass; zap
// encodes them at once, which was 4 % of the controller's CPU while 1,000
// VaultSecrets synced, for loggers that a pass that goes well never writes
// to.
func Lazy(log logr.Logger) logr.Logger {
	base := log.GetSink()
	if base == nil {
		return log
	}
	// base was initialised by log's own logr.New; one more frame to skip,
	// for this sink's Info and Error, keeps a caller's file and line right.
	if cd, ok := base.(logr.CallDepthLogSink); ok {
		base = cd.WithCallDepth(1)
	}
	return logr.New(lazySink{base: base})
}

type lazySink struct {
	base logr.LogSink
	// kv are the pairs added since base was last given any, in order.
	kv []any
}

// Init does nothing: base was initialised before Lazy wrapped it.
func (lazySink) Init(logr.RuntimeInfo) {}

func (s lazySink) Enabled(level int) bool { return s.base.Enabled(level) }

func (s lazySink) Info(level int, msg string, kv ...any) {
	s.resolved().Info(level, msg, kv...)
}

func (s lazySink) Error(err error, msg string, kv ...any) {
	s.resolved().Error(err, msg, kv...)
}

func (s lazySink) WithValues(kv ...any) logr.LogSink {
	// Clipped, so two loggers made from this one never share an array.
	return lazySink{base: s.base, kv: append(slices.Clip(s.kv), kv...)}
}

// WithName gives base the pending pairs first: a sink may scope the pairs
// added after a name under it.
func (s lazySink) WithName(name string) logr.LogSink {
	return lazySink{base: s.resolved().WithName(name)}
}

func (s lazySink) WithCallDepth(depth int) logr.LogSink {
	if cd, ok := s.base.(logr.CallDepthLogSink); ok {
		return lazySink{base: cd.WithCallDepth(depth), kv: s.kv}
	}
	return s
}

func (s lazySink) resolved() logr.LogSink {
	if len(s.kv) == 0 {
		return s.base
	}
	return s.base.WithValues(s.kv...)
}
