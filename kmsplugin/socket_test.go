package kmsplugin

import (
	"os"
	"path/filepath"
	"testing"
)

func TestListenUnixRefusesWideModesAndSymlinks(t *testing.T) {
	dir := t.TempDir()
	if _, err := ListenUnix(filepath.Join(dir, "a.sock"), 0o666, -1); err == nil {
		t.Fatal("mode 0666 accepted: anyone on the node could call the plugin")
	}
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(link, 0o600, -1); err == nil {
		t.Fatal("a symlink at the socket path was followed")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Fatalf("the symlink's target changed mode to %v", fi.Mode())
	}
}

func TestListenUnixModeAndRemovesOnlyItsOwnSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.sock")
	first, err := ListenUnix(path, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, %v; want 0660", fi.Mode(), err)
	}
	// Another instance takes the path over (the first one's file removed).
	os.Remove(path)
	second, err := ListenUnix(path, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	first.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("closing the first listener removed the second one's socket: %v", err)
	}
	second.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("the socket outlived its listener: %v", err)
	}
}
