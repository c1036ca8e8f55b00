package httpcompat

import (
	"context"
	"net"
	"net/netip"
)

// listen opens a TCP listener on addr (checked by Config.Check) for its
// family alone: IPv6 sockets are IPv6-only.
func listen(addr string) (net.Listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	network := "tcp4"
	if ap.Addr().Is6() {
		network = "tcp6"
		// Go's "tcp6" already asks for IPV6_V6ONLY; setting it here keeps
		// the invariant from resting on that detail.
		lc.Control = setV6Only
	}
	return lc.Listen(context.Background(), network, addr)
}
