// Package logging builds the one logger vaultkms's binaries share: a
// logr.Logger (the interface controller-runtime and client-go speak)
// backed by log/slog, with klog's output routed into it so nothing that
// client-go, gRPC helpers or k8s.io/kms log goes missing.
//
// Keys are lowerCamelCase ("keyID", "retryIn", "error"), as in Kubernetes'
// structured logging; errors go under "error" as already-sanitized text.
package logging

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// New returns a logger writing format ("text" or "json") at level
// ("debug", "info", "warn" or "error") to w.
func New(w io.Writer, format, level string) (logr.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return logr.Logger{}, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return logr.Logger{}, fmt.Errorf("--log-format %q: use text or json", format)
	}
	return logr.FromSlogHandler(h), nil
}

// RouteKlog sends everything logged through klog to log.
func RouteKlog(log logr.Logger) {
	klog.SetLogger(log.WithName("klog"))
}
