//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package udp

import (
	"context"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenWorkers opens n sockets bound to ap with SO_REUSEPORT, so that
// the kernel spreads datagrams over them by their source address and
// port (on Linux; other systems may favour one socket). IPv6 sockets are
// IPV6_V6ONLY: IPv4 clients arrive on IPv4 sockets only.
//
// With port 0 the first socket is bound without SO_REUSEPORT, which makes
// the kernel pick a port nobody holds; with the option set it may pick a
// port that another SO_REUSEPORT socket of the same user already has,
// and the two would share datagrams. The option is switched on after the
// bind and the other sockets join that port.
func listenWorkers(ap netip.AddrPort, n int) ([]*net.UDPConn, error) {
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	socks := make([]*net.UDPConn, 0, n)
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, c := range socks {
			c.Close()
		}
		return nil, err
	}
	for i := range n {
		pick := i == 0 && ap.Port() == 0
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			return setSockopts(rc, ap.Addr().Is6(), !pick)
		}}
		pc, err := lc.ListenPacket(context.Background(), network, ap.String())
		if err != nil {
			return fail(err)
		}
		c := pc.(*net.UDPConn)
		socks = append(socks, c)
		if pick {
			rc, err := c.SyscallConn()
			if err != nil {
				return fail(err)
			}
			if err := setSockopts(rc, false, true); err != nil {
				return fail(err)
			}
			ap = netip.AddrPortFrom(ap.Addr(), c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		}
	}
	return socks, nil
}

func setSockopts(rc syscall.RawConn, v6only, reusePort bool) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		if v6only {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			if err != nil {
				return
			}
		}
		if reusePort {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}
