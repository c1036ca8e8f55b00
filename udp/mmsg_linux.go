package udp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchConn reads and writes a worker's batch with one recvmmsg and one
// sendmmsg each, through the socket's syscall.RawConn so that the Go
// poller still parks the goroutine and deadlines still work.
//
// It calls the system calls itself rather than through x/net's
// ipv4.PacketConn.ReadBatch, which allocates a *net.UDPAddr and its IP
// for every datagram received (measured: 16 allocations for a batch of
// 8); WriteBatch does not allocate, but reading and writing with the
// same preallocated headers is simpler than mixing the two. Every header,
// iovec and address below is allocated once, in init, and points into
// the worker's messages, whose buffers never move.
//
// A reply goes to the very sockaddr its request came from, so an IPv6
// scope ID survives without a netip zone (which would allocate).
//
// On a socket bound to a wildcard address (0.0.0.0 or ::) a reply also
// leaves from the address its request was sent to. Left to itself, the
// kernel would pick the source by routing, and on a host with several
// addresses a client that wrote to one of them could get the reply from
// another and drop it, as connected sockets and NATs do. So such a socket
// has IP_PKTINFO or IPV6_RECVPKTINFO on, each message has a control
// buffer for the kernel to say where the datagram went, and each reply
// carries an IP_PKTINFO or IPV6_PKTINFO message naming that address as
// its source. The interface is left to routing (index 0), so replies
// still find their way where routes are asymmetric. A socket bound to
// one address has its source fixed already and allocates none of this.
type batchConn struct {
	rc    syscall.RawConn
	rhdrs []unix.Mmsghdr // receive, one per message
	riovs []unix.Iovec
	names [][unix.SizeofSockaddrInet6]byte // senders, as the kernel wrote them
	whdrs []unix.Mmsghdr                   // send, packed with the messages that have replies
	wiovs []unix.Iovec

	// Only on wildcard-bound sockets (pktinfo set): one control buffer
	// of ctlLen bytes per message for each direction. wctl holds, for
	// each message, a ready-made PKTINFO message whose source address
	// read fills in; hasSrc says whether it did for the datagram now in
	// the slot.
	pktinfo bool
	ctlLen  int
	rctl    []byte
	wctl    []byte
	hasSrc  []bool

	// State of the call in progress, for the bound functions below,
	// which are made once so that passing them does not allocate.
	vec    []unix.Mmsghdr
	n      int
	errno  syscall.Errno
	readF  func(fd uintptr) bool
	writeF func(fd uintptr) bool
}

func (c *batchConn) init(conn *net.UDPConn, msgs []message) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	n := len(msgs)
	c.rc = rc
	c.rhdrs = make([]unix.Mmsghdr, n)
	c.riovs = make([]unix.Iovec, n)
	c.names = make([][unix.SizeofSockaddrInet6]byte, n)
	c.whdrs = make([]unix.Mmsghdr, n)
	c.wiovs = make([]unix.Iovec, n)
	for i := range msgs {
		c.riovs[i].Base = unsafe.SliceData(msgs[i].buf)
		c.riovs[i].SetLen(len(msgs[i].buf))
		h := &c.rhdrs[i].Hdr
		h.Name = &c.names[i][0]
		h.Iov = &c.riovs[i]
		h.SetIovlen(1)
		c.whdrs[i].Hdr.Iov = &c.wiovs[i]
		c.whdrs[i].Hdr.SetIovlen(1)
	}
	c.readF = c.recvmmsg
	c.writeF = c.sendmmsg
	if la := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(); la.IsUnspecified() {
		return c.initPktinfo(la.Is4())
	}
	return nil
}

// initPktinfo asks the kernel for each datagram's destination address
// and prepares the control messages that send replies from it.
func (c *batchConn) initPktinfo(v4 bool) error {
	level, recvOpt, typ, size := unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo
	if v4 {
		level, recvOpt, typ, size = unix.IPPROTO_IP, unix.IP_PKTINFO, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo
	}
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), level, recvOpt, 1)
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	n := len(c.rhdrs)
	c.pktinfo = true
	c.ctlLen = unix.CmsgSpace(size) // a multiple of the header's alignment
	c.rctl, c.wctl = alignedBytes(n*c.ctlLen), alignedBytes(n*c.ctlLen)
	c.hasSrc = make([]bool, n)
	for i := range n {
		c.rhdrs[i].Hdr.Control = &c.rctl[i*c.ctlLen]
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&c.wctl[i*c.ctlLen]))
		cm.Level, cm.Type = int32(level), int32(typ)
		cm.SetLen(unix.CmsgLen(size))
	}
	return nil
}

// read blocks until at least one datagram arrives, then fills as many
// messages as are waiting (up to len(msgs)) and returns how many.
func (c *batchConn) read(msgs []message) (int, error) {
	for i := range c.rhdrs {
		c.rhdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		c.rhdrs[i].Hdr.Flags = 0
		c.rhdrs[i].Len = 0
		if c.pktinfo {
			c.rhdrs[i].Hdr.SetControllen(c.ctlLen)
		}
	}
	c.vec = c.rhdrs
	if err := c.rc.Read(c.readF); err != nil {
		return 0, err
	}
	if c.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", c.errno)
	}
	for i := range c.n {
		h := &c.rhdrs[i]
		// A longer address would have been cut; keep write from reading
		// past the array.
		h.Hdr.Namelen = min(h.Hdr.Namelen, unix.SizeofSockaddrInet6)
		m := &msgs[i]
		m.n = int(h.Len)
		m.src = parseSockaddr(c.names[i][:h.Hdr.Namelen])
		if c.pktinfo {
			c.hasSrc[i] = c.replySource(i, int(h.Hdr.Controllen))
		}
	}
	return c.n, nil
}

// replySource finds the PKTINFO message among the first n bytes of
// message i's received control data and copies the address the
// datagram was sent to into the source of i's reply. It reports whether
// it found one worth using; without it, the reply leaves from whatever
// address routing picks.
//
// For IPv4 it takes ipi_spec_dst, which Linux sets to the destination
// of a unicast datagram and, for a broadcast one, to the local address
// a reply should come from. IPv6 has only ipi6_addr; a multicast
// destination cannot be a source, so it is passed over.
func (c *batchConn) replySource(i, n int) bool {
	b := c.rctl[i*c.ctlLen : i*c.ctlLen+min(n, c.ctlLen)]
	hdrLen := unix.CmsgLen(0)
	for len(b) >= hdrLen {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(cm.Len)
		if l < hdrLen || l > len(b) {
			return false
		}
		data := b[hdrLen:l]
		src := unsafe.Pointer(&c.wctl[i*c.ctlLen+hdrLen])
		switch {
		case cm.Level == unix.IPPROTO_IP && cm.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			p := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			if p.Spec_dst == [4]byte{} {
				return false
			}
			*(*unix.Inet4Pktinfo)(src) = unix.Inet4Pktinfo{Spec_dst: p.Spec_dst}
			return true
		case cm.Level == unix.IPPROTO_IPV6 && cm.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			p := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			if p.Addr[0] == 0xff || p.Addr == [16]byte{} {
				return false
			}
			*(*unix.Inet6Pktinfo)(src) = unix.Inet6Pktinfo{Addr: p.Addr}
			return true
		}
		b = b[min(unix.CmsgSpace(l-hdrLen), len(b)):]
	}
	return false
}

// write sends the replies in msgs, each to the address its request came
// from. A reply the kernel refuses (a broadcast or otherwise unroutable
// source) is counted in failed and skipped; only an error that stops
// the socket is returned.
func (c *batchConn) write(msgs []message, failed *atomic.Uint64) error {
	k := 0
	for i := range msgs {
		m := &msgs[i]
		if len(m.out) == 0 {
			continue
		}
		c.wiovs[k].Base = unsafe.SliceData(m.out)
		c.wiovs[k].SetLen(len(m.out))
		c.whdrs[k].Hdr.Name = &c.names[i][0]
		c.whdrs[k].Hdr.Namelen = c.rhdrs[i].Hdr.Namelen
		if c.pktinfo && c.hasSrc[i] {
			c.whdrs[k].Hdr.Control = &c.wctl[i*c.ctlLen]
			c.whdrs[k].Hdr.SetControllen(c.ctlLen)
		} else {
			c.whdrs[k].Hdr.Control = nil
			c.whdrs[k].Hdr.SetControllen(0)
		}
		k++
	}
	for sent := 0; sent < k; {
		c.vec = c.whdrs[sent:k]
		if err := c.rc.Write(c.writeF); err != nil {
			return err
		}
		if c.errno != 0 || c.n <= 0 {
			failed.Add(1) // the error is the first message's
			sent++        // always move on: no reply is worth a loop
			continue
		}
		sent += c.n
	}
	return nil
}

func (c *batchConn) recvmmsg(fd uintptr) bool {
	return c.mmsg(unix.SYS_RECVMMSG, fd)
}

func (c *batchConn) sendmmsg(fd uintptr) bool {
	return c.mmsg(unix.SYS_SENDMMSG, fd)
}

// mmsg makes one non-blocking call on c.vec. It returns false only when
// the socket is not ready, so that the poller waits and calls again.
//
// It is a raw system call, without the runtime's entering and leaving of
// a system call: the socket is non-blocking, so the call never waits,
// and a worker that saturates its core otherwise lost its P to sysmon in
// most sendmmsg calls (they take longer than sysmon's 20 µs tick), which
// then woke every 20 µs and moved the worker between threads: 11,000
// context switches a second on the tracker's core. Raw calls gave 9-12%
// more announces and a quarter lower p99 (docs/performance.md §7).
// Another goroutine waits for the call to end, at most a batch's worth of
// kernel work, as it would for the worker's own code.
func (c *batchConn) mmsg(trap, fd uintptr) bool {
	for {
		n, _, errno := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(c.vec))), uintptr(len(c.vec)), 0, 0, 0)
		switch errno {
		case 0:
			c.n, c.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			c.n, c.errno = 0, errno
			return true
		}
	}
}

// alignedBytes returns n zeroed bytes aligned for any control message
// header.
func alignedBytes(n int) []byte {
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), n)
}

// parseSockaddr reads an AF_INET or AF_INET6 sockaddr; the result is
// unmapped and without a zone. Anything else gives the zero AddrPort,
// which handle drops.
func parseSockaddr(b []byte) netip.AddrPort {
	if len(b) < 2 {
		return netip.AddrPort{}
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if len(b) >= unix.SizeofSockaddrInet4 {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:]))
		}
	case unix.AF_INET6:
		if len(b) >= unix.SizeofSockaddrInet6 {
			return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), binary.BigEndian.Uint16(b[2:]))
		}
	}
	return netip.AddrPort{}
}
