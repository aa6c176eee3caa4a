package syncer

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"text/template"
	"text/template/parse"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Limits on rendering a tenant's templates. A template is tenant input
// run inside the shared controller: without limits a 45-byte template can
// render hundreds of megabytes, or loop for ever, and stop every tenant.
const (
	// maxRenderBytes caps one rendered key (and any string a template
	// function builds); Secrets hold at most 1 MiB in all.
	maxRenderBytes = 64 << 10
	// maxRenderSteps caps range iterations and template calls of one
	// VaultSecret, all its keys together: a budget per key would let 20
	// keys take 20 times as long.
	maxRenderSteps = 10_000
	// renderDeadline caps the wall time of one VaultSecret's templates.
	renderDeadline = time.Second
	// maxRenderTotalBytes caps all keys' output together: a Secret holds
	// at most 1 MiB.
	maxRenderTotalBytes = 1 << 20
)

var errRenderLimit = errors.New("render limit exceeded")

// limitedBuffer fails writes past its limit, which stops text/template.
type limitedBuffer struct {
	b     []byte
	limit int
}

func (w *limitedBuffer) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > w.limit {
		return 0, fmt.Errorf("output over %d bytes: %w", w.limit, errRenderLimit)
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

// meter counts the work of one render; its tick is inserted at the start of
// every range body and template, so no loop or recursion escapes it.
type meter struct {
	steps    int
	deadline time.Time
	now      func() time.Time
}

func (m *meter) tick() (string, error) {
	m.steps++
	if m.steps > maxRenderSteps {
		return "", fmt.Errorf("more than %d loop iterations or template calls: %w", maxRenderSteps, errRenderLimit)
	}
	if m.steps%1024 == 0 && m.now().After(m.deadline) {
		return "", fmt.Errorf("rendering took longer than %s: %w", renderDeadline, errRenderLimit)
	}
	return "", nil
}

const tickFunc = "vaultkmsRenderTick"

// fmtVerb finds width and precision in printf formats: large ones would
// make fmt allocate before any check could run.
var fmtVerb = regexp.MustCompile(`%[-+# 0]*(\d+|\*)?(?:\.(\d+|\*))?`)

func checkFormat(format string) error {
	for _, m := range fmtVerb.FindAllStringSubmatch(format, -1) {
		for _, n := range m[1:] {
			if n == "*" {
				return fmt.Errorf("printf: '*' width is not allowed: %w", errRenderLimit)
			}
			if v, err := strconv.Atoi(n); n != "" && (err != nil || v > 1024) {
				return fmt.Errorf("printf: width or precision over 1024: %w", errRenderLimit)
			}
		}
	}
	return nil
}

func capped(s string) (string, error) {
	if len(s) > maxRenderBytes {
		return "", fmt.Errorf("a value over %d bytes: %w", maxRenderBytes, errRenderLimit)
	}
	return s, nil
}

// funcs replaces the builtins that build strings with capped ones, so
// repeated doubling cannot grow a value past twice the cap.
func funcs(m *meter) template.FuncMap {
	return template.FuncMap{
		tickFunc: m.tick,
		"printf": func(format string, args ...any) (string, error) {
			if err := checkFormat(format); err != nil {
				return "", err
			}
			return capped(fmt.Sprintf(format, args...))
		},
		"print":    func(args ...any) (string, error) { return capped(fmt.Sprint(args...)) },
		"println":  func(args ...any) (string, error) { return capped(fmt.Sprintln(args...)) },
		"html":     func(args ...any) (string, error) { return capped(template.HTMLEscaper(args...)) },
		"js":       func(args ...any) (string, error) { return capped(template.JSEscaper(args...)) },
		"urlquery": func(args ...any) (string, error) { return capped(template.URLQueryEscaper(args...)) },
	}
}

// instrument puts a tick at the start of every range body and every
// template.
func instrument(t *template.Template, tick *parse.ActionNode) {
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Tree.Root == nil {
			continue
		}
		instrumentList(tt.Tree.Root, tick)
		tt.Tree.Root.Nodes = append([]parse.Node{tick.Copy()}, tt.Tree.Root.Nodes...)
	}
}

func instrumentList(l *parse.ListNode, tick *parse.ActionNode) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		switch n := n.(type) {
		case *parse.RangeNode:
			instrumentList(n.List, tick)
			instrumentList(n.ElseList, tick)
			if n.List != nil {
				n.List.Nodes = append([]parse.Node{tick.Copy()}, n.List.Nodes...)
			}
		case *parse.IfNode:
			instrumentList(n.List, tick)
			instrumentList(n.ElseList, tick)
		case *parse.WithNode:
			instrumentList(n.List, tick)
			instrumentList(n.ElseList, tick)
		case *parse.ListNode:
			instrumentList(n, tick)
		}
	}
}

// ValidateTemplates parses spec.target.template without data, so a bad
// template is reported before any credentials are issued for it.
func ValidateTemplates(tmpl map[string]string) error {
	for _, k := range sortedKeys(tmpl) {
		if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
			return fmt.Errorf("spec.target.template: key %q is not a valid Secret key: %s", k, errs[0])
		}
		m := &meter{now: time.Now}
		if _, err := template.New(k).Funcs(funcs(m)).Option("missingkey=error").Parse(tmpl[k]); err != nil {
			return fmt.Errorf("spec.target.template[%q]: %v", k, err)
		}
	}
	return nil
}

// renderTemplates renders each template over vars with the limits above,
// one budget for all the keys. Errors name the key but never the data.
func renderTemplates(tmpl map[string]string, vars map[string]string, now func() time.Time) (map[string][]byte, error) {
	out := make(map[string][]byte, len(tmpl))
	m := &meter{now: now, deadline: now().Add(renderDeadline)}
	total := 0
	for _, k := range sortedKeys(tmpl) {
		t, err := template.New(k).Funcs(funcs(m)).Option("missingkey=error").Parse(tmpl[k])
		if err != nil {
			return nil, fmt.Errorf("spec.target.template[%q]: %v", k, err)
		}
		tickTree, err := parse.Parse("tick", "{{"+tickFunc+"}}", "{{", "}}", map[string]any{tickFunc: m.tick})
		if err != nil {
			return nil, fmt.Errorf("internal: %w", err)
		}
		instrument(t, tickTree["tick"].Root.Nodes[0].(*parse.ActionNode))
		w := &limitedBuffer{limit: min(maxRenderBytes, maxRenderTotalBytes-total)}
		if err := t.Execute(w, vars); err != nil {
			if errors.Is(err, errRenderLimit) {
				return nil, fmt.Errorf("spec.target.template[%q]: stopped: %w", k, unwrapLimit(err))
			}
			return nil, fmt.Errorf("spec.target.template[%q]: a key it uses is missing from the Vault data, or a function failed", k)
		}
		out[k] = w.b
		total += len(w.b)
	}
	return out, nil
}

// unwrapLimit keeps the limit's own message, dropping text/template's
// context (which may quote the data).
func unwrapLimit(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if u := errors.Unwrap(e); u == errRenderLimit {
			return e
		}
	}
	return errRenderLimit
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
