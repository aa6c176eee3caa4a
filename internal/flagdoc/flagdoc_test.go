package flagdoc

import (
	"flag"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func flags() *flag.FlagSet {
	fs := flag.NewFlagSet("p", flag.ContinueOnError)
	fs.String("listen", "unix:///run/k.sock", "")
	fs.Duration("timeout", 5*time.Second, "")
	fs.String("key", "", "")
	fs.Bool("version", false, "")
	fs.String("log-format", "text", "")
	fs.String("log-level", "info", "")
	fs.Duration("settle", 0, "for the project's tests only: settles")
	return fs
}

const doc = "# p\n\n## Flags\n\n| flag | default | meaning |\n|---|---|---|\n" +
	"| `--listen` | `unix:///run/k.sock` | socket |\n" +
	"| `--timeout` | `5s` | how long |\n" +
	"| `--key` | *(required)* | the key; see `--listen` |\n" +
	"| `--version` | | print it |\n" +
	"| `--log-format`, `--log-level` | `text`, `info` | logging |\n" +
	"\n## Next\n\n| `--gone` | | a table of another section |\n"

func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(fs *flag.FlagSet)
		doc     string
		heading string
		want    []string
	}{
		{name: "agree", doc: doc, heading: "## Flags"},
		{name: "a flag the table lacks", doc: doc, heading: "## Flags",
			edit: func(fs *flag.FlagSet) { fs.Int("workers", 4, "") },
			want: []string{`--workers (default "4") is not in the table under "## Flags"`}},
		{name: "a default changed", doc: doc, heading: "## Flags",
			edit: func(fs *flag.FlagSet) { _ = fs.Set("timeout", "10s"); fs.Lookup("timeout").DefValue = "10s" },
			want: []string{`--timeout: the table (line 8) says the default is "5s"; the program's is "10s"`}},
		{name: "one of two defaults changed", doc: doc, heading: "## Flags",
			edit: func(fs *flag.FlagSet) { fs.Lookup("log-level").DefValue = "warn" },
			want: []string{`--log-level: the table (line 11) says the default is "info"; the program's is "warn"`}},
		{name: "a documented flag the program lacks", heading: "## Flags",
			doc:  doc[:len("# p\n\n## Flags\n\n| flag | default | meaning |\n|---|---|---|\n")] + "| `--listen` | `unix:///run/k.sock` | |\n| `--old` | | |\n| `--timeout` | `5s` | |\n| `--key` | | |\n| `--version` | | |\n| `--log-format` | `text` | |\n| `--log-level` | `info` | |\n",
			want: []string{"--old is documented but the program has no such flag"}},
		{name: "an empty default for a flag that has one", heading: "## Flags",
			doc:  "## Flags\n| `--listen` | | |\n| `--timeout` | `5s` | |\n| `--key` | | |\n| `--version` | | |\n| `--log-format`, `--log-level` | `text`, `info` | |\n",
			want: []string{`--listen: the table (line 2) gives no default; the program's is "unix:///run/k.sock"`}},
		{name: "two flags, one default", heading: "## Flags",
			doc: "## Flags\n| `--listen` | `unix:///run/k.sock` | |\n| `--timeout` | `5s` | |\n| `--key` | | |\n| `--version` | | |\n| `--log-format`, `--log-level` | `text` | |\n",
			want: []string{"--log-format: the table (line 6) names 2 flags and 1 defaults; give one default per flag, or none",
				"--log-level: the table (line 6) names 2 flags and 1 defaults; give one default per flag, or none"}},
		{name: "no such heading", doc: doc, heading: "## Options", want: []string{`no heading "## Options"`}},
		{name: "a heading with no table", doc: "## Flags\n\nnone\n## Next\n| `--listen` | | |\n", heading: "## Flags",
			want: []string{`no flag table under "## Flags"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flags()
			if tc.edit != nil {
				tc.edit(fs)
			}
			got := Problems(fs, []byte(tc.doc), tc.heading)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Problems:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// A pflag FlagSet reads as the standard library's with the defaults pflag
// records; hidden flags are left out, as --help leaves them out.
func TestFromPFlags(t *testing.T) {
	pfs := pflag.NewFlagSet("cmd", pflag.ContinueOnError)
	pfs.StringP("output", "o", "table", "")
	pfs.Duration("settle-time", 5*time.Minute, "")
	pfs.StringSlice("urls", nil, "")
	pfs.Bool("force", false, "")
	pfs.Duration("test-only", 0, "")
	if err := pfs.MarkHidden("test-only"); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	FromPFlags(pfs).VisitAll(func(f *flag.Flag) { got[f.Name] = f.DefValue })
	want := map[string]string{"output": "table", "settle-time": "5m0s", "urls": "", "force": "false"}
	if !maps.Equal(got, want) {
		t.Fatalf("defaults %v, want %v", got, want)
	}
	doc := []byte("## Flags\n\n| flag | default |\n|---|---|\n| `-o`, `--output` | `table` |\n| `--settle-time` | `5m0s` |\n| `--urls` | |\n| `--force` | `false` |\n")
	if p := Problems(FromPFlags(pfs), doc, "## Flags"); len(p) > 0 {
		t.Fatalf("problems: %v", p)
	}
}
