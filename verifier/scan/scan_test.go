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
