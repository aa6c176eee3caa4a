package harness

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// programImages holds the images of this module's small programs built
// by ProgramImage, one build per program and test process. Each binary is
// built with -trimpath, so the tag (its content's hash) is the same
// across runs and docker keeps the image as a cache (.ci/run removes no
// images).
var programImages struct {
	mu   sync.Mutex
	refs map[string]string
}

// PauseImage returns the sandbox image of the test nodes, built from
// e2e/harness/pause on scratch: a node pulls nothing.
func PauseImage(env Env) string {
	env.Helper()
	return ProgramImage(env, "github.com/vaultkms/vaultkms/e2e/harness/pause", "pause")
}

// ProgramImage builds a command of this module (a static binary) into an
// image FROM scratch running it as user 65535, named
// docker.io/vaultkms-e2e/<name>:<hash>, and returns that name.
func ProgramImage(env Env, pkg, name string) string {
	env.Helper()
	programImages.mu.Lock()
	defer programImages.mu.Unlock()
	if ref := programImages.refs[pkg]; ref != "" {
		return ref
	}
	ref, err := buildProgramImage(pkg, name)
	if err != nil {
		env.Fatalf("image of %s: %v", pkg, err)
	}
	if programImages.refs == nil {
		programImages.refs = map[string]string{}
	}
	programImages.refs[pkg] = ref
	return ref
}

func buildProgramImage(pkg, name string) (string, error) {
	dir, err := os.MkdirTemp("", "vk-image")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", pkg, err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	return scratchImage(name, b, "65535:65535")
}

// scratchImage builds an image FROM scratch holding binary as /<name>,
// run as user (root when empty), named docker.io/vaultkms-e2e/<name>:<the
// binary's hash>, unless docker has it already. Fully qualified:
// containerd names an image imported from a docker archive
// docker.io/<name>, and sandbox_image and pods must name it exactly so.
func scratchImage(name string, binary []byte, user string) (string, error) {
	// An image FROM scratch runs nothing but a static executable: a
	// wrapper script would fail in the container as "no such file".
	if !bytes.HasPrefix(binary, []byte("\x7fELF")) {
		return "", fmt.Errorf("%s is not an executable binary (a script?); an image FROM scratch needs the binary itself", name)
	}
	sum := sha256.Sum256(binary)
	ref := "docker.io/vaultkms-e2e/" + name + ":" + hex.EncodeToString(sum[:6])
	if _, err := Docker("image", "inspect", ref); err == nil {
		return ref, nil
	}
	dir, err := os.MkdirTemp("", "vk-image")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, name), binary, 0o755); err != nil {
		return "", err
	}
	df := fmt.Sprintf("FROM scratch\nCOPY %s /%s\n", name, name)
	if user != "" {
		df += "USER " + user + "\n"
	}
	df += fmt.Sprintf("ENTRYPOINT [\"/%s\"]\n", name)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return "", err
	}
	if _, err := Docker("build", "-q", "--label", TestLabel, "-t", ref, dir); err != nil {
		return "", err
	}
	return ref, nil
}

// LoadImage copies an image from docker into the node's containerd
// (docker save | ctr images import), where pods with imagePullPolicy
// Never or IfNotPresent find it: the node pulls nothing. ref should be
// fully qualified (docker.io/...), as pods name it.
func (n *Node) LoadImage(ref string) {
	n.env.Helper()
	if err := n.loadImage(ref); err != nil {
		n.env.Fatalf("load %s into the node: %v", ref, err)
	}
}

func (n *Node) loadImage(ref string) error {
	save := exec.Command("docker", "save", ref)
	imp := exec.Command("ctr", "--address", n.l.Socket, "-n", "k8s.io", "images", "import", "-")
	pipe, err := save.StdoutPipe()
	if err != nil {
		return err
	}
	imp.Stdin = pipe
	var saveErr, impOut bytes.Buffer
	save.Stderr = &saveErr
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := imp.Start(); err != nil {
		return err
	}
	if err := save.Run(); err != nil {
		_ = imp.Wait()
		return fmt.Errorf("docker save: %w: %s", err, strings.TrimSpace(saveErr.String()))
	}
	if err := imp.Wait(); err != nil {
		return fmt.Errorf("ctr images import: %w: %s", err, strings.TrimSpace(impOut.String()))
	}
	return nil
}

// BinaryImage builds an image FROM scratch holding one real component
// of bin/ (make tools), such as kube-apiserver, run as root as kubeadm
// runs the control plane (see scratchImage).
func BinaryImage(env Env, name string) string {
	env.Helper()
	path := Binary(env, name)
	b, err := os.ReadFile(path)
	if err != nil {
		env.Fatalf("image of %s: %v", path, err)
	}
	ref, err := scratchImage(name, b, "")
	if err != nil {
		env.Fatalf("image of %s: %v", path, err)
	}
	return ref
}
