//go:build !linux

package udp

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
)

// batchConn reads and writes one datagram per call where recvmmsg and
// sendmmsg are missing. ReadFromUDPAddrPort and WriteToUDPAddrPort do not
// allocate.
type batchConn struct {
	conn *net.UDPConn
	srcs []netip.AddrPort // as received, zone included, for the reply
}

func (c *batchConn) init(conn *net.UDPConn, msgs []message) error {
	c.conn = conn
	c.srcs = make([]netip.AddrPort, len(msgs))
	return nil
}

func (c *batchConn) read(msgs []message) (int, error) {
	n, src, err := c.conn.ReadFromUDPAddrPort(msgs[0].buf)
	if err != nil {
		return 0, err
	}
	c.srcs[0] = src
	msgs[0].n = n
	msgs[0].src = netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port())
	return 1, nil
}

func (c *batchConn) write(msgs []message, failed *atomic.Uint64) error {
	for i := range msgs {
		if len(msgs[i].out) == 0 {
			continue
		}
		if _, err := c.conn.WriteToUDPAddrPort(msgs[i].out, c.srcs[i]); err != nil {
			if isClosedOrTimeout(err) {
				return err
			}
			failed.Add(1)
		}
	}
	return nil
}

func isClosedOrTimeout(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}
