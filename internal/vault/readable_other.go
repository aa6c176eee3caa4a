//go:build !unix

package vault

import "net"

// readable cannot peek here; a dead connection is then caught by the
// resend on a new one.
func readable(net.Conn) bool { return false }
