package scan

import "testing"

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
