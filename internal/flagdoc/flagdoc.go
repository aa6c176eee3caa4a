// Package flagdoc compares a program's flags with the table that documents
// them, so a flag cannot be added, renamed or given a new default without
// the documentation saying so.
package flagdoc

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// testOnly starts the usage of a flag that exists for the project's own
// tests; such a flag need not be in the table.
const testOnly = "for the project's tests only"

var (
	flagName = regexp.MustCompile("`--([a-z0-9-]+)`")
	literal  = regexp.MustCompile("`([^`]*)`")
)

// Check fails t with each of Problems for the table under heading in the
// markdown file at path.
func Check(t testing.TB, fs *flag.FlagSet, path, heading string) {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Problems(fs, doc, heading) {
		t.Errorf("%s: %s", path, p)
	}
}

// Problems lists what differs between the flags of fs and the table under
// heading in markdown (a line equal to heading, up to the next heading of
// the same or a higher level). A row's first cell names one or more flags
// (`--name`); its second cell is their default: a literal (`10s`) per
// flag, compared with the flag's default, or empty for a flag whose
// default is its type's zero value, or text in italics (*(required)*),
// which is not compared. It returns nothing when they agree.
func Problems(fs *flag.FlagSet, markdown []byte, heading string) []string {
	rows, err := table(markdown, heading)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	documented := map[string]bool{}
	for _, r := range rows {
		for i, name := range r.flags {
			documented[name] = true
			f := fs.Lookup(name)
			if f == nil {
				out = append(out, fmt.Sprintf("--%s is documented but the program has no such flag", name))
				continue
			}
			if msg := compareDefault(f, r, i); msg != "" {
				out = append(out, msg)
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !documented[f.Name] && !strings.HasPrefix(f.Usage, testOnly) {
			out = append(out, fmt.Sprintf("--%s (default %q) is not in the table under %q", f.Name, f.DefValue, heading))
		}
	})
	sort.Strings(out)
	return out
}

type row struct {
	flags    []string
	defaults []string // the literals of the default cell
	italic   bool     // the default cell describes the default in words, not compared
	line     int
}

func compareDefault(f *flag.Flag, r row, i int) string {
	var want string
	switch {
	case r.italic:
		return ""
	case len(r.defaults) == 0:
		if zero(f.DefValue) {
			return ""
		}
		return fmt.Sprintf("--%s: the table (line %d) gives no default; the program's is %q", f.Name, r.line, f.DefValue)
	case len(r.defaults) == len(r.flags):
		want = r.defaults[i]
	case len(r.flags) == 1:
		// Several literals for one flag: the first is the default, the
		// rest name its values or a note.
		want = r.defaults[0]
	default:
		return fmt.Sprintf("--%s: the table (line %d) names %d flags and %d defaults; give one default per flag, or none", f.Name, r.line, len(r.flags), len(r.defaults))
	}
	if want == f.DefValue {
		return ""
	}
	return fmt.Sprintf("--%s: the table (line %d) says the default is %q; the program's is %q", f.Name, r.line, want, f.DefValue)
}

func zero(v string) bool { return v == "" || v == "false" || v == "0" || v == "0s" }

// table reads the rows under heading that name at least one flag.
func table(markdown []byte, heading string) ([]row, error) {
	level := strings.IndexFunc(heading, func(r rune) bool { return r != '#' })
	if level <= 0 {
		return nil, fmt.Errorf("%q is not a markdown heading", heading)
	}
	var rows []row
	found := false
	sc := bufio.NewScanner(bytes.NewReader(markdown))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if !found {
			found = line == heading
			continue
		}
		if l := strings.IndexFunc(line, func(r rune) bool { return r != '#' }); l > 0 && l <= level && strings.HasPrefix(line[l:], " ") {
			break
		}
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 2 {
			continue
		}
		var r row
		for _, m := range flagName.FindAllStringSubmatch(cells[0], -1) {
			r.flags = append(r.flags, m[1])
		}
		if len(r.flags) == 0 {
			continue
		}
		def := strings.TrimSpace(cells[1])
		for _, m := range literal.FindAllStringSubmatch(def, -1) {
			r.defaults = append(r.defaults, m[1])
		}
		r.italic, r.line = strings.HasPrefix(def, "*"), n
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("no heading %q", heading)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("no flag table under %q", heading)
	}
	return rows, nil
}

// FromPFlags is fs (spf13/pflag's, as kubectl plugins use) as a standard
// library FlagSet, for Problems and Check: each visible flag with its
// default as pflag records it, an empty list counting as no default.
// Hidden flags are left out, as --help leaves them out.
func FromPFlags(fs *pflag.FlagSet) *flag.FlagSet {
	out := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		def := f.DefValue
		if def == "[]" {
			def = ""
		}
		out.Var(fixed(def), f.Name, f.Usage)
	})
	return out
}

// fixed is a flag.Value whose String is its default.
type fixed string

func (v fixed) String() string { return string(v) }
func (fixed) Set(string) error { return nil }
