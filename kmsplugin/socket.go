package kmsplugin

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
// refuses to start; a symlink or any other file is refused too. The socket
// is created with mode (at most 0660) already in place, with no chmod that
// could follow a link, and, when gid is not negative, given that group with
// lchown. Closing the listener removes the socket only if the path still
// holds the very file this process created.
func ListenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if mode&^0o660 != 0 {
		return nil, fmt.Errorf("socket mode %o is wider than 0660: only the owner and the socket's group may reach the plugin", mode)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory %q: %w", dir, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%q exists and is not a socket (a symlink or a file); remove it or choose another --listen path", path)
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
	// The umask gives the socket its final mode at creation, so there is
	// no moment in which it is reachable with looser permissions.
	old := syscall.Umask(int(^mode & 0o777))
	lis, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	ul := lis.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("stat socket %q: %w", path, err)
	}
	own := &ownedSocket{UnixListener: ul, path: path, info: fi}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			own.Close()
			return nil, fmt.Errorf("set group %d on socket %q: %w", gid, path, err)
		}
	}
	return own, nil
}

// ownedSocket removes its socket file on Close only if the path still
// names the file it created: a plugin started later on the same path keeps
// its socket when this one exits.
type ownedSocket struct {
	*net.UnixListener
	path string
	info os.FileInfo
	once sync.Once
}

func (o *ownedSocket) Close() error {
	err := o.UnixListener.Close()
	o.once.Do(func() {
		if fi, lerr := os.Lstat(o.path); lerr == nil && os.SameFile(fi, o.info) {
			os.Remove(o.path)
		}
	})
	return err
}
