package redis

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/peertable"
)

// Store layout. One HASH per (swarm, origin):
//
//	key   <prefix>{<40 hex info hash>}:<16 hex origin>
//	field compact peer: 4 or 16 address bytes, then the port, big-endian;
//	      the field's length (6 or 18) is the family
//	value flags (1 byte: 1 = seeder), then the unix seconds of the
//	      publication (4 bytes, big-endian)
//	field "c": the origin's completed count for the swarm, in decimal
//
// The {hash tag} keeps a swarm's keys of all origins in one Cluster slot.
// Every write sets the key to expire Config.RemoteLifetime later.
const (
	fieldCompleted = "c"
	valueLen       = 1 + 4
	flagSeeder     = 1
)

// putPeer appends the compact form of ap to dst.
func putPeer(dst []byte, ap netip.AddrPort) []byte {
	a := ap.Addr()
	if a.Is4() {
		b := a.As4()
		dst = append(dst, b[:]...)
	} else {
		b := a.As16()
		dst = append(dst, b[:]...)
	}
	return binary.BigEndian.AppendUint16(dst, ap.Port())
}

// parsePeer reads a compact peer of 6 or 18 bytes.
func parsePeer(b []byte) (netip.AddrPort, bool) {
	switch len(b) {
	case peertable.PeerLenV4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b)), binary.BigEndian.Uint16(b[4:])), true
	case peertable.PeerLenV6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b)), binary.BigEndian.Uint16(b[16:])), true
	}
	return netip.AddrPort{}, false
}

// appendPeerValue appends a peer's value to dst.
func appendPeerValue(dst []byte, seeder bool, unix uint32) []byte {
	var flags byte
	if seeder {
		flags = flagSeeder
	}
	return binary.BigEndian.AppendUint32(append(dst, flags), unix)
}

func parseValue(v string) (seeder bool, published time.Time, ok bool) {
	if len(v) != valueLen {
		return false, time.Time{}, false
	}
	return v[0]&flagSeeder != 0, time.Unix(int64(binary.BigEndian.Uint32([]byte(v[1:]))), 0), true
}

// appendCompletedValue appends the value of field "c" to dst.
func appendCompletedValue(dst []byte, n uint32) []byte { return strconv.AppendUint(dst, uint64(n), 10) }

// Change notification, one PUBLISH on <prefix>changes per batch (split
// into messages of at most maxMessage bytes):
//
//	off len field
//	  0   1 version (1)
//	  1   8 origin
//	  9   … records, each:
//	        1 kind: op (bits 0-2: 1 put, 2 remove, 3 completed, 4 resync),
//	          bit 3 = IPv6, bit 4 = seeder
//	       20 info hash (not for resync)
//	      6/18 compact peer (put, remove) or 4 completed count (completed)
const (
	wireVersion = 1
	headerLen   = 1 + 8
	maxMessage  = 64 << 10
	maxRecord   = 1 + 20 + peertable.PeerLenV6

	kindPut       = 1
	kindRemove    = 2
	kindCompleted = 3
	kindResync    = 4
	kindOpMask    = 7
	kindV6        = 8
	kindSeeder    = 16
)

var errBadMessage = errors.New("redis: malformed change notification")

func appendHeader(dst []byte, o conncache.Origin) []byte {
	dst = append(dst, wireVersion)
	return append(dst, o[:]...)
}

func appendRecord(dst []byte, r *conncache.Record) []byte {
	switch r.Op {
	case conncache.OpPut, conncache.OpRemove:
		k := byte(kindPut)
		if r.Op == conncache.OpRemove {
			k = kindRemove
		}
		if r.Peer.Addr.Addr().Is6() {
			k |= kindV6
		}
		if r.Peer.Seeder {
			k |= kindSeeder
		}
		dst = append(dst, k)
		dst = append(dst, r.InfoHash[:]...)
		return putPeer(dst, r.Peer.Addr)
	case conncache.OpCompleted:
		dst = append(dst, kindCompleted)
		dst = append(dst, r.InfoHash[:]...)
		return binary.BigEndian.AppendUint32(dst, r.Completed)
	}
	return dst
}

// decode appends msg's records to dst. resync reports a resync record.
func decode(msg []byte, dst []conncache.Record) (o conncache.Origin, recs []conncache.Record, resync bool, err error) {
	if len(msg) < headerLen || msg[0] != wireVersion {
		return o, dst, false, errBadMessage
	}
	o = conncache.Origin(msg[1:9])
	b := msg[headerLen:]
	for len(b) > 0 {
		k := b[0]
		b = b[1:]
		op := k & kindOpMask
		if op == kindResync {
			resync = true
			continue
		}
		if len(b) < 20 {
			return o, dst, resync, errBadMessage
		}
		var r conncache.Record
		r.InfoHash = peertable.InfoHash(b[:20])
		b = b[20:]
		switch op {
		case kindPut, kindRemove:
			n := peertable.PeerLenV4
			if k&kindV6 != 0 {
				n = peertable.PeerLenV6
			}
			if len(b) < n {
				return o, dst, resync, errBadMessage
			}
			ap, _ := parsePeer(b[:n])
			b = b[n:]
			r.Op = conncache.OpPut
			if op == kindRemove {
				r.Op = conncache.OpRemove
			}
			r.Peer = peertable.Peer{Addr: ap, Seeder: k&kindSeeder != 0}
		case kindCompleted:
			if len(b) < 4 {
				return o, dst, resync, errBadMessage
			}
			r.Op = conncache.OpCompleted
			r.Completed = binary.BigEndian.Uint32(b)
			b = b[4:]
		default:
			return o, dst, resync, errBadMessage
		}
		dst = append(dst, r)
	}
	return o, dst, resync, nil
}
