package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/vaultkms/vaultkms/internal/flagdoc"
)

// Each command's flags, as `kubectl vaultkms <command> --help` shows them,
// are in docs/rotation.md's tables: the flags every scanning command
// shares in one, each command's own in another.
func TestFlagsDocumented(t *testing.T) {
	const doc = "../../docs/rotation.md"
	ios := streams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}
	shared := newCommon("shared", ios).fs
	flagdoc.Check(t, flagdoc.FromPFlags(shared), doc, "### Flags of the scanning commands")
	var seen *pflag.FlagSet
	flagsParsed = func(fs *pflag.FlagSet) { seen = fs }
	defer func() { flagsParsed = func(*pflag.FlagSet) {} }()
	for _, c := range commands {
		seen = nil
		if err := c.run(context.Background(), ios, []string{"--help"}); !errors.Is(err, pflag.ErrHelp) {
			t.Errorf("%s --help: %v, want the help", c.name, err)
			continue
		}
		if seen == nil {
			t.Errorf("%s parsed no flags", c.name)
			continue
		}
		// Its own flags: those the shared ones do not hold.
		own := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
		seen.VisitAll(func(f *pflag.Flag) {
			if !usesShared(c.name) || shared.Lookup(f.Name) == nil {
				own.AddFlag(f)
			}
		})
		heading := "### Flags of kubectl vaultkms " + c.name
		if !own.HasFlags() {
			continue
		}
		flagdoc.Check(t, flagdoc.FromPFlags(own), doc, heading)
	}
}

// usesShared tells whether a command takes the scanning commands' flags.
func usesShared(name string) bool { return name != "secrets" && name != "convert" }
