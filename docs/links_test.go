// Package docs holds the project's documentation; its test checks that the
// relative links of README.md and docs/*.md resolve.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// link matches a Markdown link target: [text](target).
var link = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// heading matches a Markdown heading line.
var heading = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`)

// anchor is GitHub's anchor of a heading: lower case, punctuation dropped,
// spaces turned into hyphens.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, file string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(stripCode(string(b)), -1) {
		h := strings.NewReplacer("`", "", "*", "").Replace(m[1])
		a := anchor(h)
		for i := 0; out[a]; i++ { // repeated headings get -1, -2, ...
			a = anchor(h) + "-" + string(rune('1'+i))
		}
		out[a] = true
	}
	return out
}

// stripCode drops fenced code blocks, whose # lines and ](...) are not
// headings or links.
func stripCode(s string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			in = !in
			continue
		}
		if !in {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestRelativeLinksResolve(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("..", "README.md"), filepath.Join("..", "CONTRIBUTING.md"), filepath.Join("..", "charts", "vaultkms", "README.md"))
	if len(files) < 5 {
		t.Fatalf("found only %v: run from docs/", files)
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(stripCode(string(b)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %q: %s does not exist", f, target, dest)
					continue
				}
			}
			checked++
			if frag != "" && strings.HasSuffix(dest, ".md") && !anchors(t, dest)[frag] {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", f, target, frag, dest)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link checked")
	}
}

func TestAnchor(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"The auditor: EncryptionStatus without etcd credentials in the controller", "the-auditor-encryptionstatus-without-etcd-credentials-in-the-controller"},
		{"Rotation on autopilot (RotationPolicy)", "rotation-on-autopilot-rotationpolicy"},
		{"Scraping the plugin", "scraping-the-plugin"},
	} {
		if got := anchor(tc.in); got != tc.want {
			t.Errorf("anchor(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
