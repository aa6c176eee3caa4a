package scan

import (
	"context"
	"errors"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestKeyPrefix(t *testing.T) {
	cases := map[Resource]string{
		"secrets":             "/registry/secrets/",
		"configmaps":          "/registry/configmaps/",
		"widgets.example.com": "/registry/example.com/widgets/",
	}
	for r, want := range cases {
		if got := r.KeyPrefix("/registry/"); got != want {
			t.Errorf("%s: %q, want %q", r, got, want)
		}
	}
}

func TestParseResources(t *testing.T) {
	rs, err := ParseResources(" secrets, configmaps ,widgets.example.com")
	if err != nil || len(rs) != 3 || rs[2] != "widgets.example.com" {
		t.Fatalf("ParseResources = %v, %v", rs, err)
	}
	for _, bad := range []string{"", " , ", "secrets/default"} {
		if _, err := ParseResources(bad); err == nil {
			t.Errorf("ParseResources(%q) accepted", bad)
		}
	}
}

func TestReportByKeyID(t *testing.T) {
	r := Report{Resources: []Counts{{ByKeyID: map[string]int{"a": 2, "b": 1}}, {ByKeyID: map[string]int{"a": 3}}}}
	if got := r.ByKeyID(); got["a"] != 5 || got["b"] != 1 || len(got) != 2 {
		t.Fatalf("ByKeyID = %v", got)
	}
}

// countKV answers count-only reads from a set of keys, or fails them all.
type countKV struct {
	keys map[string]bool
	err  error
	gets int
}

func (k *countKV) Get(_ context.Context, key string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets++
	if k.err != nil {
		return nil, k.err
	}
	resp := &clientv3.GetResponse{}
	if k.keys[key] {
		resp.Count = 1
	}
	return resp, nil
}

func TestTargetsNeedNoEtcd(t *testing.T) {
	got, err := Targets("/registry/", []Resource{"secrets", "deployments", "secrets", "vaultsecrets.secrets.vaultkms.io"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{
		{Resource: "secrets", KeyPrefix: "/registry/secrets/"},
		{Resource: "deployments.apps", KeyPrefix: "/registry/deployments/"},
		{Resource: "vaultsecrets.secrets.vaultkms.io", KeyPrefix: "/registry/secrets.vaultkms.io/vaultsecrets/",
			CRD: "/registry/apiextensions.k8s.io/customresourcedefinitions/vaultsecrets.secrets.vaultkms.io"},
	}
	if len(got) != len(want) {
		t.Fatalf("Targets = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := Targets("/registry", []Resource{"widgets"}); err == nil || !strings.Contains(err.Error(), "<plural>.<group>") {
		t.Errorf("an unknown ungrouped name: %v, want an error naming the form <plural>.<group>", err)
	}
}

func TestCheckCRDs(t *testing.T) {
	targets, err := Targets("/registry", []Resource{"secrets", "widgets.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	crd := "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"
	cases := []struct {
		name    string
		kv      *countKV
		wantErr string
	}{
		{"definition stored", &countKV{keys: map[string]bool{crd: true}}, ""},
		{"definition missing", &countKV{keys: map[string]bool{}}, "no key " + crd},
		{"etcd down", &countKV{err: errors.New("context deadline exceeded")}, "look up CustomResourceDefinition widgets.example.com"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckCRDs(context.Background(), c.kv, targets)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
			}
			if c.kv.gets != 1 {
				t.Errorf("%d reads of etcd, want 1 (built-in resources need none)", c.kv.gets)
			}
		})
	}
}

// A scan refuses a custom resource whose definition is gone before it reads
// any range: an empty range must not read as "all encrypted".
func TestRunChecksCRDsFirst(t *testing.T) {
	targets, err := Targets("/registry", []Resource{"widgets.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	kv := &countKV{keys: map[string]bool{}}
	if _, err := Run(context.Background(), kv, Options{Targets: targets}); err == nil || !strings.Contains(err.Error(), "widgets.example.com") {
		t.Fatalf("Run = %v, want the missing definition named", err)
	}
	if kv.gets != 1 {
		t.Errorf("%d reads, want only the definition's", kv.gets)
	}
}
