package syncer

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRenderTemplatesLimits(t *testing.T) {
	vars := map[string]string{"user": "svc", "password": "s3cr3t-value"}
	cases := []struct {
		name, tmpl string
		want       string // rendered output, or "" when limited
		limited    bool
	}{
		{"plain", `{{ .user }}:{{ .password }}`, "svc:s3cr3t-value", false},
		{"range over a small int is fine", `{{range 3}}x{{end}}`, "xxx", false},
		{"printf with a small width", `{{printf "%5s" .user}}`, "  svc", false},
		{"45 bytes that would render 200 MB", `{{range 200000000}}{{"x"}}{{end}}`, "", true},
		{"a loop that writes nothing never returns", `{{range 3000000000}}{{end}}`, "", true},
		{"nested empty loops", `{{range 100000}}{{range 100000}}{{end}}{{end}}`, "", true},
		{"huge printf width", `{{printf "%0999999999d" 1}}`, "", true},
		{"star width", `{{printf "%*d" 999999999 1}}`, "", true},
		{"doubling a string", `{{$x := "aaaaaaaa"}}{{range 40}}{{$x = printf "%s%s" $x $x}}{{end}}{{$x}}`, "", true},
		{"recursion", `{{define "r"}}{{template "r" .}}{{end}}{{template "r" .}}`, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, err := renderTemplates(map[string]string{"k": tc.tmpl}, vars, time.Now)
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("render took %s", took)
			}
			if tc.limited {
				if err == nil || !errors.Is(err, errRenderLimit) {
					t.Fatalf("err = %v, want a render limit", err)
				}
				if !strings.Contains(err.Error(), `spec.target.template["k"]`) || strings.Contains(err.Error(), "s3cr3t") {
					t.Fatalf("error does not name the key, or leaks data: %v", err)
				}
				return
			}
			if err != nil || string(out["k"]) != tc.want {
				t.Fatalf("got %q, %v; want %q", out["k"], err, tc.want)
			}
		})
	}
}

func TestRenderMissingKeyNamesKeyNotData(t *testing.T) {
	_, err := renderTemplates(map[string]string{"dsn": `{{ .password }}@{{ .host }}`}, map[string]string{"password": "s3cr3t"}, time.Now)
	if err == nil || !strings.Contains(err.Error(), `"dsn"`) || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
}

func TestValidateTemplates(t *testing.T) {
	if err := ValidateTemplates(map[string]string{"ok.key": "{{ .a }}"}); err != nil {
		t.Fatal(err)
	}
	if err := ValidateTemplates(map[string]string{"bad key": "x"}); err == nil || !strings.Contains(err.Error(), "not a valid Secret key") {
		t.Fatalf("err = %v", err)
	}
	if err := ValidateTemplates(map[string]string{"k": "{{ .a "}); err == nil || !strings.Contains(err.Error(), `template["k"]`) {
		t.Fatalf("err = %v", err)
	}
}

// TestRenderBudgetIsPerVaultSecret: the step budget is shared by all the
// keys of a VaultSecret, so twenty keys cannot take twenty budgets.
func TestRenderBudgetIsPerVaultSecret(t *testing.T) {
	vars := map[string]string{"user": "svc"}
	each := `{{range 1000}}{{end}}{{.user}}` // a tenth of the budget
	cases := []struct {
		name    string
		keys    int
		limited bool
	}{
		{"five keys fit", 5, false},
		{"twenty keys share one budget", 20, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := map[string]string{}
			for i := range tc.keys {
				tmpl[string(rune('a'+i))] = each
			}
			_, err := renderTemplates(tmpl, vars, time.Now)
			if got := errors.Is(err, errRenderLimit); got != tc.limited {
				t.Fatalf("limited: %v (%v), want %v", got, err, tc.limited)
			}
		})
	}
}
