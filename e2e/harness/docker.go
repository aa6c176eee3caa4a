package harness

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// TestLabel marks every container, network and image the tests create, so
// .ci/run can remove what a killed test left behind.
const TestLabel = "vaultkms.test=1"

// Docker runs the docker CLI and returns its standard output.
func Docker(args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// RandomSuffix is a short random name part for containers and tags.
func RandomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// BuildImage builds the repository Dockerfile's target with the given
// static binaries (bin/<name> in the build context), on scratch (no
// registry is reachable here), tagged ref and labelled TestLabel. The image
// is removed on cleanup.
func BuildImage(env Env, target, ref, version string, binaries map[string]string) {
	env.Helper()
	ctx := env.TempDir()
	if err := os.MkdirAll(filepath.Join(ctx, "bin"), 0o755); err != nil {
		env.Fatalf("%v", err)
	}
	df, err := os.ReadFile(RepoPath(env, "Dockerfile"))
	if err != nil {
		env.Fatalf("read Dockerfile: %v", err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644); err != nil {
		env.Fatalf("%v", err)
	}
	for name, src := range binaries {
		b, err := os.ReadFile(src)
		if err != nil {
			env.Fatalf("%v", err)
		}
		if err := os.WriteFile(filepath.Join(ctx, "bin", name), b, 0o755); err != nil {
			env.Fatalf("%v", err)
		}
	}
	if _, err := Docker("build", "-q", "--target", target, "--build-arg", "BASE_IMAGE=scratch",
		"--build-arg", "VERSION="+version, "--label", TestLabel, "-t", ref, ctx); err != nil {
		env.Fatalf("%v", err)
	}
	env.Cleanup(func() { _, _ = Docker("rmi", "-f", ref) })
}

// shippedBuild is the `go build` of the Makefile's images: no paths of
// this machine, no symbol table or DWARF (CGO_ENABLED=0 is the caller's).
func shippedBuild() []string {
	return []string{"build", "-trimpath", "-ldflags=-s -w"}
}

// StaticBuild builds a command of this module as a static binary (as
// `make build` does) and returns its path.
func StaticBuild(env Env, pkg string) string {
	env.Helper()
	out := filepath.Join(env.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", append(shippedBuild(), "-o", out, pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		env.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// DockerCombined runs the docker CLI and returns standard output and error
// together (a container's log has both).
func DockerCombined(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	return string(out), err
}
