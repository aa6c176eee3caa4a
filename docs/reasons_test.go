package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// reasonDocs says where the condition reasons declared in each file are
// looked up by users: the RotationPolicy's in rotation.md's tables, every
// other in troubleshooting.md's.
func reasonDoc(file string) string {
	if filepath.Base(file) == "rotationpolicy_types.go" {
		return "rotation.md"
	}
	return "troubleshooting.md"
}

// declaredReasons reads, from the Go files of dir (tests apart), every
// constant named Reason... with a string value, by file.
func declaredReasons(t *testing.T, dir string) map[string][]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Reason") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out[f] = append(out[f], v)
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
		byFile := declaredReasons(t, dir)
		files := make([]string, 0, len(byFile))
		for f := range byFile {
			files = append(files, f)
		}
		sort.Strings(files)
		for _, f := range files {
			doc := reasonDoc(f)
			for _, reason := range byFile[f] {
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
