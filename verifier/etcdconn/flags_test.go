package etcdconn

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// The auditor parses with the standard library, kubectl-vaultkms with
// pflag: the same arguments must give the same connection with either.
func TestFlags(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parsers := map[string]func(args []string) (*Flags, error){
		"flag": func(args []string) (*Flags, error) {
			var f Flags
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			f.Bind(fs)
			return &f, fs.Parse(args)
		},
		"pflag": func(args []string) (*Flags, error) {
			var f Flags
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			f.Bind(fs)
			return &f, fs.Parse(args)
		},
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    Config
		prefix  string
		wantErr string
		noEnds  bool
	}{
		{name: "defaults", args: []string{"--etcd-endpoints=https://a:2379"},
			want: Config{Endpoints: []string{"https://a:2379"}, DialTimeout: 5 * time.Second, RequestTimeout: 30 * time.Second}, prefix: "/registry"},
		{name: "comma separated and repeated", args: []string{"--etcd-endpoints=https://a:2379, https://b:2379,", "--etcd-endpoints", "https://c:2379"},
			want: Config{Endpoints: []string{"https://a:2379", "https://b:2379", "https://c:2379"}, DialTimeout: 5 * time.Second, RequestTimeout: 30 * time.Second}, prefix: "/registry"},
		{name: "everything", args: []string{"--etcd-endpoints=https://a:2379", "--etcd-cacert=ca", "--etcd-cert=crt", "--etcd-key=key",
			"--etcd-user=reader", "--etcd-password-file=" + pw, "--etcd-dial-timeout=2s", "--etcd-request-timeout=1m", "--etcd-prefix=/k8s"},
			want: Config{Endpoints: []string{"https://a:2379"}, CACert: "ca", Cert: "crt", Key: "key", Username: "reader", Password: "s3cret",
				DialTimeout: 2 * time.Second, RequestTimeout: time.Minute}, prefix: "/k8s"},
		{name: "no endpoints", args: nil, wantErr: "--etcd-endpoints is required: testing", noEnds: true},
		{name: "only commas", args: []string{"--etcd-endpoints=,"}, wantErr: "--etcd-endpoints is required", noEnds: true},
		{name: "unreadable password file", args: []string{"--etcd-endpoints=https://a:2379", "--etcd-password-file=" + filepath.Join(dir, "missing")},
			wantErr: "--etcd-password-file: open"},
	} {
		for pname, parse := range parsers {
			t.Run(tc.name+"/"+pname, func(t *testing.T) {
				f, err := parse(tc.args)
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				got, err := f.Config("testing")
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
					}
					if errors.Is(err, ErrNoEndpoints) != tc.noEnds {
						t.Fatalf("errors.Is(%v, ErrNoEndpoints) = %v, want %v", err, !tc.noEnds, tc.noEnds)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				want := tc.want
				if !slices.Equal(got.Endpoints, want.Endpoints) {
					t.Errorf("endpoints %q, want %q", got.Endpoints, want.Endpoints)
				}
				got.Endpoints, want.Endpoints = nil, nil
				if !reflect.DeepEqual(got, want) {
					t.Errorf("config %+v, want %+v", got, want)
				}
				if f.Prefix != tc.prefix {
					t.Errorf("prefix %q, want %q", f.Prefix, tc.prefix)
				}
			})
		}
	}
}
