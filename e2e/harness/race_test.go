package harness

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

type recordingEnv struct {
	*testing.T
	errors []string
}

func (r *recordingEnv) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestFailOnDataRace(t *testing.T) {
	cases := []struct {
		name, log string
		fails     bool
	}{
		{"clean log", "INFO starting\nINFO stopped\n", false},
		{"a race report", "INFO starting\n==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n", true},
		{"the word race alone", "INFO race for the lease won\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := &recordingEnv{T: t}
			failOnDataRace(env, "vaultkms-controller", tc.log)
			if got := len(env.errors) > 0; got != tc.fails {
				t.Fatalf("failed: %v, want %v (%v)", got, tc.fails, env.errors)
			}
			if tc.fails && !strings.Contains(env.errors[0], "Write at") {
				t.Fatalf("the report is not quoted: %q", env.errors[0])
			}
		})
	}
}

// TestManagersBuildWithTheTestsRaceDetector: under `go test -race` the
// controllers are built with -race; without it, they are not.
func TestManagersBuildWithTheTestsRaceDetector(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a command")
	}
	bin := goBuild(t, "github.com/vaultkms/vaultkms/cmd/vaultkms-auditor", raceEnabled)
	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	if got := strings.Contains(string(out), "-race=true"); got != raceEnabled {
		t.Fatalf("built with -race: %v, want %v:\n%s", got, raceEnabled, out)
	}
}
