package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/vaultkms/vaultkms/internal/convert"
)

// runConvert turns Vault Secrets Operator and External Secrets Operator
// manifests into vaultkms ones (docs/migrate-from-vso.md,
// docs/migrate-from-eso.md). It reads manifests only and talks to no
// server: the output is for review, then `kubectl apply -f -`.
//
// Exit codes: 0 when something was converted (warnings on stderr name
// every field that was not), 1 when the input cannot be read or is not
// valid YAML, 2 bad usage, 4 when nothing could be converted.
func runConvert(_ context.Context, ios streams, args []string) error {
	fs := pflag.NewFlagSet("convert", pflag.ContinueOnError)
	fs.SetOutput(ios.ErrOut)
	file := fs.StringP("filename", "f", "", "the peer's manifests: a file, or - for stdin (multi-document YAML)")
	adopt := fs.Bool("adopt", false, "set target.adopt on every VaultSecret, to take over the Secrets the peer wrote (the cut-over that never leaves an application without its Secret)")
	namespace := fs.StringP("namespace", "n", "default", "namespace of the objects that name none")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return usageErr("-f is required: the file of Vault Secrets Operator or External Secrets Operator manifests, or - for stdin")
	}
	in := ios.In
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("-f: %w", err)
		}
		defer f.Close()
		in = f
	}
	res, err := convert.Convert(in, convert.Options{Adopt: *adopt, DefaultNamespace: *namespace})
	if err != nil {
		return fmt.Errorf("%s: %w", name(*file), err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(ios.ErrOut, w.String())
	}
	if res.Converted == 0 {
		return refused("%s: nothing could be converted (see the lines above)", name(*file))
	}
	if err := convert.WriteYAML(ios.Out, res.Objects); err != nil {
		return err
	}
	fmt.Fprintf(ios.ErrOut, "converted %d of the input's objects into %d vaultkms objects; %d notes above\n", res.Converted, len(res.Objects), len(res.Warnings))
	return nil
}

func name(file string) string {
	if file == "-" {
		return "stdin"
	}
	return file
}
