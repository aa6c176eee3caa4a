package vault

import (
	"bytes"
	"io"
)

// unsolicitedLine starts the line net/http logs (through the standard log
// package) when an idle connection receives an answer nobody asked for; it
// quotes the answer's first bytes, which may be a wrapped or unwrapped
// seed or a secret.
var unsolicitedLine = []byte("Unsolicited response received on idle HTTP channel")

// StdLogFilter returns a writer for log.SetOutput that passes every line
// to next except net/http's unsolicited-answer line, which is replaced by
// one without the answer's bytes. The standard logger writes one line per
// Write.
func StdLogFilter(next io.Writer) io.Writer { return stdLogFilter{next} }

type stdLogFilter struct{ next io.Writer }

func (f stdLogFilter) Write(p []byte) (int, error) {
	if i := bytes.Index(p, unsolicitedLine); i >= 0 {
		line := append(append([]byte{}, p[:i]...), "vault connection closed: it received an answer nobody asked for (content not logged)\n"...)
		if _, err := f.next.Write(line); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return f.next.Write(p)
}
