package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"
	"sigs.k8s.io/yaml"
)

// emit writes v as JSON or YAML, or calls table for the table format.
func emit(w io.Writer, format string, v any, table func(w io.Writer)) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// progress draws a one-line progress indicator on a terminal and stays
// silent when stderr is not one (piped, in CI).
type progress struct {
	w     io.Writer
	on    bool
	total int
	label string
}

func newProgress(w io.Writer, label string, total int) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, on: ok && term.IsTerminal(int(f.Fd())), total: total, label: label}
}

func (p *progress) set(label string, done int) {
	if !p.on {
		return
	}
	if label != "" {
		p.label = label
	}
	if p.total <= 0 {
		fmt.Fprintf(p.w, "\r\033[K%s: %d", p.label, done)
		return
	}
	const width = 30
	filled := min(width, done*width/max(1, p.total))
	fmt.Fprintf(p.w, "\r\033[K%s [%s%s] %d/%d", p.label, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, p.total)
}

func (p *progress) done() {
	if p.on {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
