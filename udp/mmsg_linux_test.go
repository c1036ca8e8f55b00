package udp

import (
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wildcardConn returns the batchConn, with a batch of one, of a socket
// bound to 0.0.0.0 or [::].
func wildcardConn(t *testing.T, v4 bool) *batchConn {
	t.Helper()
	network, wild := "udp4", netip.IPv4Unspecified()
	if !v4 {
		if !haveIPv6() {
			t.Skip("IPv6 unavailable")
		}
		network, wild = "udp6", netip.IPv6Unspecified()
	}
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(wild, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := new(batchConn)
	if err := c.init(conn, []message{{buf: make([]byte, 1)}}); err != nil {
		t.Fatal(err)
	}
	if !c.pktinfo {
		t.Fatalf("init on %v left pktinfo off", conn.LocalAddr())
	}
	return c
}

// putCmsg writes a control message header and data at the start of b
// and returns the bytes written, CmsgLen(len(data)) unless length says
// otherwise.
func putCmsg(b []byte, level, typ int32, data []byte, length int) int {
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	cm.Level, cm.Type = level, typ
	if length < 0 {
		length = unix.CmsgLen(len(data))
	}
	cm.SetLen(length)
	copy(b[unix.CmsgLen(0):], data)
	return min(unix.CmsgLen(len(data)), len(b))
}

func TestReplySource(t *testing.T) {
	pkt4 := func(specDst, addr string) []byte {
		p := unix.Inet4Pktinfo{Ifindex: 1, Spec_dst: netip.MustParseAddr(specDst).As4(), Addr: netip.MustParseAddr(addr).As4()}
		return unsafe.Slice((*byte)(unsafe.Pointer(&p)), unix.SizeofInet4Pktinfo)
	}
	pkt6 := func(addr string) []byte {
		p := unix.Inet6Pktinfo{Addr: netip.MustParseAddr(addr).As16(), Ifindex: 1}
		return unsafe.Slice((*byte)(unsafe.Pointer(&p)), unix.SizeofInet6Pktinfo)
	}
	tests := []struct {
		name   string
		v4     bool
		level  int32
		typ    int32
		data   []byte
		length int    // cmsg_len; -1 means the right one
		want   string // the reply's source, or "" for none
	}{
		{"v4", true, unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4("192.0.2.7", "192.0.2.7"), -1, "192.0.2.7"},
		{"v4 broadcast", true, unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4("192.0.2.7", "255.255.255.255"), -1, "192.0.2.7"},
		{"v4 no spec_dst", true, unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4("0.0.0.0", "192.0.2.7"), -1, ""},
		{"v4 other type", true, unix.IPPROTO_IP, unix.IP_TTL, pkt4("192.0.2.7", "192.0.2.7"), -1, ""},
		{"v4 short", true, unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4("192.0.2.7", "192.0.2.7")[:8], -1, ""},
		{"v4 len past buffer", true, unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4("192.0.2.7", "192.0.2.7"), 1000, ""},
		{"v4 len zero", true, unix.IPPROTO_IP, unix.IP_PKTINFO, pkt4("192.0.2.7", "192.0.2.7"), 0, ""},
		{"v6", false, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pkt6("2001:db8::7"), -1, "2001:db8::7"},
		{"v6 link-local", false, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pkt6("fe80::7"), -1, "fe80::7"},
		{"v6 multicast", false, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pkt6("ff02::1"), -1, ""},
		{"v6 unspecified", false, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pkt6("::"), -1, ""},
		{"v6 level v4", false, unix.IPPROTO_IP, unix.IPV6_PKTINFO, pkt6("2001:db8::7"), -1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := wildcardConn(t, tc.v4)
			clear(c.rctl)
			n := putCmsg(c.rctl, tc.level, tc.typ, tc.data, tc.length)
			got := c.replySource(0, n)
			if got != (tc.want != "") {
				t.Fatalf("replySource = %v, want %v", got, tc.want != "")
			}
			if !got {
				return
			}
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&c.wctl[0]))
			data := c.wctl[unix.CmsgLen(0):]
			var src netip.Addr
			var ifindex int64
			if tc.v4 {
				p := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
				src, ifindex = netip.AddrFrom4(p.Spec_dst), int64(p.Ifindex)
				if cm.Level != unix.IPPROTO_IP || cm.Type != unix.IP_PKTINFO || int(cm.Len) != unix.CmsgLen(unix.SizeofInet4Pktinfo) || p.Addr != [4]byte{} {
					t.Errorf("reply control message %x, want IP_PKTINFO with ipi_addr 0", c.wctl)
				}
			} else {
				p := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
				src, ifindex = netip.AddrFrom16(p.Addr), int64(p.Ifindex)
				if cm.Level != unix.IPPROTO_IPV6 || cm.Type != unix.IPV6_PKTINFO || int(cm.Len) != unix.CmsgLen(unix.SizeofInet6Pktinfo) {
					t.Errorf("reply control message %x, want IPV6_PKTINFO", c.wctl)
				}
			}
			if src != netip.MustParseAddr(tc.want) || ifindex != 0 {
				t.Errorf("reply source %v on interface %d, want %v on 0", src, ifindex, tc.want)
			}
		})
	}
}

func TestPktinfoOnlyOnWildcard(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var c batchConn
	if err := c.init(conn, []message{{buf: make([]byte, 1)}}); err != nil {
		t.Fatal(err)
	}
	if c.pktinfo || c.rctl != nil || c.wctl != nil || c.rhdrs[0].Hdr.Control != nil {
		t.Errorf("init on %v set up control messages; want none on a socket bound to one address", conn.LocalAddr())
	}
}
