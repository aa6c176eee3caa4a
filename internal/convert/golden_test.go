package convert

import (
	"os"
	"strings"
	"testing"
)

// The worked examples of docs/migrate-from-vso.md and
// docs/migrate-from-eso.md are this package's output, byte for byte: each
// document's input and output blocks are converted and compared here, so
// the docs cannot drift from the code.
func TestDocsWorkedExamples(t *testing.T) {
	for _, doc := range []string{"../../docs/migrate-from-vso.md", "../../docs/migrate-from-eso.md"} {
		t.Run(doc, func(t *testing.T) {
			b, err := os.ReadFile(doc)
			if err != nil {
				t.Fatal(err)
			}
			blocks := yamlBlocks(string(b))
			if len(blocks) != 2 {
				t.Fatalf("%d yaml blocks in the worked example, want 2 (input, output)", len(blocks))
			}
			c := run(t, blocks[0], Options{Adopt: true})
			if c.yaml != blocks[1] {
				t.Fatalf("the documented output differs from the conversion:\n%s", c.yaml)
			}
		})
	}
}

// yamlBlocks returns the ```yaml fenced blocks of a Markdown text.
func yamlBlocks(md string) []string {
	var out []string
	var cur *strings.Builder
	for _, l := range strings.Split(md, "\n") {
		switch {
		case cur == nil && strings.TrimSpace(l) == "```yaml":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(l) == "```":
			out = append(out, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(l + "\n")
		}
	}
	return out
}
