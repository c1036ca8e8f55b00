//go:build unix

package httpcompat

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setV6Only makes an IPv6 socket IPv6-only, so that IPv4 clients never
// arrive on it as v4-mapped addresses.
func setV6Only(network, address string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}
