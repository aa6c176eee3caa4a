//go:build unix

package vault

import (
	"net"
	"syscall"
)

// readable tells whether c has bytes or an end of stream waiting, without
// consuming anything: one non-blocking peek. An idle HTTP/1.1 connection
// should have neither.
func readable(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var buf [1]byte
	waiting := false
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// n > 0: unasked bytes; n == 0 without error: the peer closed;
		// EAGAIN: nothing, as it should be.
		waiting = n > 0 || (n == 0 && rerr == nil) || (rerr != nil && rerr != syscall.EAGAIN && rerr != syscall.EWOULDBLOCK)
		return true
	})
	return waiting || err != nil
}
