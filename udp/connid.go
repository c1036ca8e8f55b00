package udp

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// A connection ID proves that its holder received a reply at the address
// it claims, as a SYN cookie does. It is stateless, so every worker, and
// every process that shares the Secret, accepts the IDs of the others:
//
//	bits  63-48   stamp: the Unix time of issue in seconds, mod 2^16
//	bits  47-0    the low 48 bits of SipHash-2-4(key, ip || time)
//
// where ip is the client's address in its 16-byte form (IPv4 as
// ::ffff:a.b.c.d) and time is the full Unix time of issue as 8
// little-endian bytes. The validator rebuilds the full time from the
// stamp and its own clock, so an ID is worth one 2^-48 guess however it
// is tampered with.
//
// The ID binds the IP address only, not the port. Only a host that
// receives at an IP learns its IDs, so the port adds nothing against
// spoofed sources, while NATs (carrier-grade ones especially) give a
// client a new source port when a mapping idles out, which may be after
// only 30 seconds, inside the minute BEP 15 lets a client reuse an ID; a
// client whose ID failed would get silence until its own copy expired.
// opentracker and the first chihaya made the same choice.
const (
	connIDMACBits = 48
	connIDMACMask = 1<<connIDMACBits - 1

	// connIDLifetime is how long BEP 15 says a tracker should accept an
	// ID; Config.ConnIDGrace adds to it.
	connIDLifetime = 120
	// maxConnIDGrace keeps the lifetime well inside the 2^16-second
	// range of the stamp.
	maxConnIDGrace = 3600
	// connIDSkew is how far in the future a stamp may lie, for processes
	// sharing a Secret whose clocks differ by up to a second. A stamp
	// further ahead is refused.
	connIDSkew = 1
)

// connIDs issues and checks connection IDs. It is read-only after
// newConnIDs and safe for concurrent use.
type connIDs struct {
	k0, k1   uint64
	lifetime int64 // seconds, ConnIDGrace included
}

// newConnIDs derives the SipHash key from secret, whatever its length.
func newConnIDs(secret []byte, grace int64) connIDs {
	h := sha256.New()
	h.Write([]byte("chihaya udp connection id v1\x00"))
	h.Write(secret)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return connIDs{
		k0:       binary.LittleEndian.Uint64(sum[0:]),
		k1:       binary.LittleEndian.Uint64(sum[8:]),
		lifetime: connIDLifetime + grace,
	}
}

// issue returns a connection ID for addr at now (Unix seconds).
func (c *connIDs) issue(addr netip.Addr, now int64) uint64 {
	return uint64(uint16(now))<<connIDMACBits | c.mac(addr, now)
}

// valid reports whether id was issued for addr at most lifetime seconds
// before now, and at most connIDSkew seconds after it.
func (c *connIDs) valid(id uint64, addr netip.Addr, now int64) bool {
	// The stamp's full time is the latest t <= now+skew with the same
	// low 16 bits; anything more than lifetime before now is expired,
	// and that includes stamps from further in the future, which land
	// 18 hours in the past.
	hi := now + connIDSkew
	issued := hi - int64(uint16(hi)-uint16(id>>connIDMACBits))
	if now-issued > c.lifetime {
		return false
	}
	return c.mac(addr, issued) == id&connIDMACMask
}

func (c *connIDs) mac(addr netip.Addr, t int64) uint64 {
	ip := addr.As16()
	m0 := binary.LittleEndian.Uint64(ip[0:])
	m1 := binary.LittleEndian.Uint64(ip[8:])
	return sipHash24(c.k0, c.k1, m0, m1, uint64(t)) & connIDMACMask
}

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein) of the 24-byte
// message whose little-endian words are m0, m1, m2. It is written out
// for that one length, so that it inlines its rounds and never touches
// memory.
func sipHash24(k0, k1, m0, m1, m2 uint64) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573

	v3 ^= m0
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= m0

	v3 ^= m1
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= m1

	v3 ^= m2
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= m2

	// The last block holds the message length in its top byte and no
	// message bytes, 24 being a multiple of 8.
	const last = 24 << 56
	v3 ^= last
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= last

	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return v0 ^ v1 ^ v2 ^ v3
}

func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}
