package main

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxGSOSegments is the most datagrams one GSO buffer may hold
// (UDP_MAX_SEGMENTS in the kernel).
const maxGSOSegments = 64

// gsoSupported reports whether the kernel takes UDP_SEGMENT on c
// (Linux 4.18 and later).
func gsoSupported(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, 0) == nil
	})
	return ok
}

// gsoControl returns a control message that makes the kernel cut a
// buffer into datagrams of size bytes.
func gsoControl(size int) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}

// gsoSize returns the segment size of a control message from gsoControl.
func gsoSize(b []byte) int {
	return int(binary.NativeEndian.Uint16(b[unix.CmsgLen(0):]))
}
