package rewrite

import "testing"

func TestParseKey(t *testing.T) {
	ok := map[string]Object{
		"/registry/secrets/default/db":        {Namespace: "default", Name: "db"},
		"/registry/example.com/widgets/w1":    {Name: "w1"},
		"/registry/secrets/kube-system/a.b-c": {Namespace: "kube-system", Name: "a.b-c"},
	}
	for key, want := range ok {
		prefix := "/registry/secrets/"
		if want.Namespace == "" {
			prefix = "/registry/example.com/widgets/"
		}
		got, err := ParseKey(prefix, key)
		if err != nil || got != want {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v", key, got, err, want)
		}
	}
	for _, key := range []string{"/registry/configmaps/default/x", "/registry/secrets/", "/registry/secrets/a/b/c", "/registry/secrets//x"} {
		if _, err := ParseKey("/registry/secrets/", key); err == nil {
			t.Errorf("ParseKey(%q) accepted", key)
		}
	}
}
