package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/vaultkms/vaultkms/e2e/harness"
)

// TestImages builds every Dockerfile target from static binaries, as
// `make image` does (on scratch here), and runs each image's --version:
// the entrypoint is the right program and it starts on an empty base.
func TestImages(t *testing.T) {
	if _, err := harness.Docker("info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("this test builds images with docker: %v", err)
	}
	targets := map[string]string{
		"plugin":           "vaultkms-plugin",
		"controller":       "vaultkms-controller",
		"kubectl-vaultkms": "kubectl-vaultkms",
		"auditor":          "vaultkms-auditor",
	}
	// Every binary, as `make build` leaves them in bin/: docker's classic
	// builder (the only one here) also builds the stages before --target.
	binaries := map[string]string{}
	for _, binary := range targets {
		if _, err := os.Stat(harness.RepoPath(t, "cmd/"+binary)); err == nil {
			binaries[binary] = harness.StaticBuild(t, "github.com/vaultkms/vaultkms/cmd/"+binary)
		}
	}
	for target, binary := range targets {
		t.Run(target, func(t *testing.T) {
			if binaries[binary] == "" {
				t.Skipf("cmd/%s does not exist in this tree; make image skips it too", binary)
			}
			ref := "vaultkms-e2e/" + binary + ":" + harness.RandomSuffix()
			harness.BuildImage(t, target, ref, "e2e-version", binaries)
			out, err := harness.DockerCombined("run", "--rm", "--label", harness.TestLabel, "--read-only", "--cap-drop", "ALL", ref, "--version")
			if err != nil {
				t.Fatalf("docker run %s --version: %v\n%s", ref, err, out)
			}
			if !strings.HasPrefix(strings.TrimSpace(out), binary+" ") {
				t.Fatalf("%s --version printed %q, want it to start with %q", ref, out, binary+" ")
			}
			labels, err := harness.Docker("image", "inspect", "--format",
				`{{index .Config.Labels "org.opencontainers.image.title"}} {{index .Config.Labels "org.opencontainers.image.version"}} {{.Config.User}}`, ref)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.TrimSpace(labels), binary+" e2e-version 65532:65532"; got != want {
				t.Fatalf("image title, version label and user = %q, want %q", got, want)
			}
			t.Logf("%s: %s", ref, strings.TrimSpace(out))
		})
	}
}
