//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package udp

import (
	"net"
	"net/netip"
)

// listenWorkers opens one socket where SO_REUSEPORT is missing; the n
// workers of the address share it, each with its own buffers. Network
// "udp6" makes Go set IPV6_V6ONLY, so the families still never mix.
func listenWorkers(ap netip.AddrPort, n int) ([]*net.UDPConn, error) {
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	return []*net.UDPConn{c}, nil
}
