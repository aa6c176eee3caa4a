package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// reasonDoc says where the condition reasons declared in each file are
// looked up by users: the RotationPolicy's in rotation.md's tables, every
// other in troubleshooting.md's.
func reasonDoc(file string) string {
	if filepath.Base(file) == "rotationpolicy_types.go" {
		return "rotation.md"
	}
	return "troubleshooting.md"
}

// parsedFiles parses the Go files of dir, tests apart, by path.
func parsedFiles(t *testing.T, dir string) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*ast.File{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = af
	}
	return fset, out
}

// stringConsts reads, from the Go files of dir (tests apart), every
// constant with a string value: by file, by name.
func stringConsts(t *testing.T, dir string) map[string]map[string]string {
	t.Helper()
	_, files := parsedFiles(t, dir)
	out := map[string]map[string]string{}
	for f, af := range files {
		out[f] = map[string]string{}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, err := strconv.Unquote(lit.Value)
						if err != nil {
							t.Fatal(err)
						}
						out[f][name.Name] = v
					}
				}
			}
		}
	}
	return out
}

// Every Ready reason the controller, the auditor or the autopilot can set
// is explained where users look it up: a reason a user sees on a
// VaultSecret, a VaultAuth, a ClusterVaultConnection, an EncryptionStatus
// or a RotationPolicy and cannot find there is a doc that does not match
// the code.
func TestReasonsDocumented(t *testing.T) {
	docs := map[string]string{}
	for _, name := range []string{"troubleshooting.md", "rotation.md"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		docs[name] = string(b)
	}
	found := 0
	for _, dir := range []string{"../syncer", "../api/v1alpha1"} {
		byFile := stringConsts(t, dir)
		files := make([]string, 0, len(byFile))
		for f := range byFile {
			files = append(files, f)
		}
		sort.Strings(files)
		for _, f := range files {
			doc := reasonDoc(f)
			for name, reason := range byFile[f] {
				if !strings.HasPrefix(name, "Reason") {
					continue
				}
				found++
				if !strings.Contains(docs[doc], "`"+reason+"`") {
					t.Errorf("reason %q (declared in %s) is not explained in docs/%s", reason, strings.TrimPrefix(f, "../"), doc)
				}
			}
		}
	}
	// The walk must see the reasons it checks: the syncer's and the
	// API's are some forty.
	if found < 30 {
		t.Fatalf("only %d reasons declared in syncer/ and api/v1alpha1: the walk reads the wrong files", found)
	}
}

// eventReasons reads, from the syncer's Go files (tests apart), the reason
// of every event it records whose reason is written down: a string
// literal or a Reason... constant (a Ready reason passed on in a variable
// is checked as a Ready reason).
func eventReasons(t *testing.T, dir string, consts map[string]string) map[string]string {
	t.Helper()
	fset, files := parsedFiles(t, dir)
	// The position of the reason among each recorder's arguments.
	reasonArg := map[string]int{"event": 2, "tell": 2, "Eventf": 3}
	out := map[string]string{}
	for _, af := range files {
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			i, ok := reasonArg[sel.Sel.Name]
			if !ok || len(call.Args) <= i {
				return true
			}
			where := fset.Position(call.Pos()).String()
			switch a := call.Args[i].(type) {
			case *ast.BasicLit:
				if v, err := strconv.Unquote(a.Value); err == nil {
					out[v] = where
				}
			case *ast.Ident:
				if v, ok := consts[a.Name]; ok {
					out[v] = where
				}
			}
			return true
		})
	}
	return out
}

// Every event reason the controller records is listed in
// docs/controller.md, with the Ready reasons it shares explained in
// troubleshooting.md (TestReasonsDocumented).
func TestEventReasonsDocumented(t *testing.T) {
	b, err := os.ReadFile("controller.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	consts := map[string]string{}
	for _, byName := range stringConsts(t, "../syncer") {
		maps.Copy(consts, byName)
	}
	reasons := eventReasons(t, "../syncer", consts)
	if len(reasons) < 6 {
		t.Fatalf("only %d event reasons found in syncer/: %v; the walk misses the recorders", len(reasons), reasons)
	}
	for reason, where := range reasons {
		if !strings.Contains(doc, "`"+reason+"`") {
			t.Errorf("event reason %q (%s) is not listed in docs/controller.md", reason, strings.TrimPrefix(where, "../"))
		}
	}
}
