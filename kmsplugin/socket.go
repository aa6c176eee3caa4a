package kmsplugin

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// SocketPath turns a --listen value (unix:///path or a bare path) into a path.
func SocketPath(listen string) (string, error) {
	p := listen
	if rest, ok := strings.CutPrefix(listen, "unix://"); ok {
		p = rest
	} else if strings.Contains(listen, "://") {
		return "", fmt.Errorf("--listen %q: only unix:// sockets are supported", listen)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("--listen %q: the socket path must be absolute, such as unix:///run/vaultkms/kms.sock", listen)
	}
	return p, nil
}

// ListenUnix opens the plugin's socket. Its directory is created 0700 if
// missing. A socket file left by an earlier run is removed only when nothing
// answers on it; if something does, another plugin owns it and ListenUnix
// refuses to start. The socket gets mode (0600 unless asked otherwise) and,
// when gid is not negative, that group.
func ListenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory %q: %w", dir, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%q exists and is not a socket; remove it or choose another --listen path", path)
		}
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("another process is serving on %q; refusing to start a second plugin on the same socket", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %q: %w", path, err)
		}
	}
	// Create the socket with no access for anyone but the owner, so there is
	// no moment in which it is reachable with looser permissions.
	old := syscall.Umask(0o177)
	lis, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			lis.Close()
			return nil, fmt.Errorf("set group %d on socket %q: %w", gid, path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("set mode %o on socket %q: %w", mode, path, err)
	}
	return lis, nil
}
