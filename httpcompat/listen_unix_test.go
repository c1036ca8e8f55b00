//go:build unix

package httpcompat

import (
	"log/slog"
	"net"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

func TestIPv6ListenerIsIPv6Only(t *testing.T) {
	s, err := Listen(Config{Addrs: []string{"[::]:0", "[::1]:0"}, Logger: slog.New(slog.DiscardHandler)}, newTracker(t))
	if err != nil {
		t.Skipf("no IPv6 here: %v", err)
	}
	defer s.Close()
	for i, ln := range s.lns {
		rc, err := ln.(*limitListener).Listener.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) }); err != nil || gerr != nil {
			t.Fatalf("getsockopt: %v, %v", err, gerr)
		}
		if v != 1 {
			t.Errorf("listener %v: IPV6_V6ONLY = %d, want 1", s.Addrs()[i], v)
		}
	}
	// Nothing answers IPv4 on the wildcard IPv6 listener's port.
	if c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(int(s.Addrs()[0].Port()))); err == nil {
		c.Close()
		t.Errorf("an IPv4 connection reached the IPv6-only listener on %v", s.Addrs()[0])
	}
}
