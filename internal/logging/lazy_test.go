package logging

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// countingSink counts the pairs its WithValues is given.
type countingSink struct {
	logr.LogSink
	pairs *int
}

func (c countingSink) WithValues(kv ...any) logr.LogSink {
	*c.pairs += len(kv) / 2
	return countingSink{LogSink: c.LogSink.WithValues(kv...), pairs: c.pairs}
}

func TestLazy(t *testing.T) {
	var lines []string
	base := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{})
	pairs := 0
	log := Lazy(logr.New(countingSink{LogSink: base.GetSink(), pairs: &pairs}))

	// A pass that writes nothing costs no encoding.
	for i := range 100 {
		_ = log.WithName("syncer").WithValues("namespace", "app", "name", i).WithValues("reconcileID", i)
	}
	if pairs != 0 {
		t.Fatalf("%d pairs given to the sink with no line written", pairs)
	}

	a := log.WithValues("namespace", "app")
	b := a.WithValues("name", "one")
	c := a.WithValues("name", "two") // must not overwrite b's pairs
	b.Info("first", "k", 1)
	c.Error(errors.New("boom"), "second")
	log.WithValues("x", 1).WithName("named").V(1).Info("not enabled")
	log.WithValues("x", 2).WithName("named").Info("third")
	if len(lines) != 3 {
		t.Fatalf("lines %q, want 3", lines)
	}
	for i, want := range []string{`"name"="one"`, `"name"="two"`, `"x"=2`} {
		if !strings.Contains(lines[i], want) || (i < 2 && !strings.Contains(lines[i], `"namespace"="app"`)) {
			t.Errorf("line %d %q lacks %s", i, lines[i], want)
		}
	}
	if !strings.HasPrefix(lines[2], "named ") {
		t.Errorf("line %q lacks its name", lines[2])
	}
}

// The line a caller logs from is reported, through the lazy sink and
// through a helper that asks for one more frame.
func TestLazyCaller(t *testing.T) {
	var lines []string
	log := Lazy(funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{LogCaller: funcr.All}))
	_, _, line, _ := runtime.Caller(0)
	log.WithValues("k", "v").Info("direct")
	logHelper(log.WithValues("k", "v"))
	want := []string{fmt.Sprintf(`"file"="lazy_test.go" "line"=%d`, line+1), fmt.Sprintf(`"file"="lazy_test.go" "line"=%d`, line+2)}
	if len(lines) != 2 || !strings.Contains(lines[0], want[0]) || !strings.Contains(lines[1], want[1]) {
		t.Errorf("lines %q, want callers %q", lines, want)
	}
}

func logHelper(log logr.Logger) { log.WithCallDepth(1).Info("from a helper") }

func TestLazyDiscard(t *testing.T) {
	log := Lazy(logr.Discard())
	log.WithValues("k", "v").Info("nothing")
}
