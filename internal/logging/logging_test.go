package logging

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

func TestKlogIsRoutedIntoTheLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	RouteKlog(log)
	defer klog.ClearLogger()
	klog.InfoS("from client-go", "podName", "p")
	klog.Flush()
	out := buf.String()
	if !strings.Contains(out, "from client-go") || !strings.Contains(out, `"podName":"p"`) {
		t.Fatalf("klog output did not reach the logger: %q", out)
	}
}

func TestNewRejectsUnknownSettings(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "xml", "info"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Fatalf("err = %v", err)
	}
	if _, err := New(&bytes.Buffer{}, "text", "loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("err = %v", err)
	}
}
