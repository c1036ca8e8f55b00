package peertable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Snapshot file, version 1; integers are big-endian.
//
//	header (16 bytes)
//	off len field
//	  0   6 magic "CHSNAP"             6  1 version (1)
//	  7   1 flags (bit 0: peers)       8  8 written, Unix seconds
//
//	one record per swarm, without peers (24 bytes)
//	  0  20 info hash                 20  4 completed
//
//	one record per swarm, with peers (32 bytes, then the peers)
//	  0  20 info hash                 20  4 completed
//	 24   4 IPv4 peers (n4)           28  4 IPv6 peers (n6)
//	 32 7×n4 IPv4 peers: 4 address, 2 port, 1 flags (bit 0: seeder)
//	  … 19×n6 IPv6 peers: 16 address, 2 port, 1 flags (bit 0: seeder)
//
//	trailer (12 bytes)
//	  0   8 number of records          8  4 CRC-32C of every byte before it
//
// The record count sits in the trailer because a lock-free walk learns it
// only at the end. A reader checks the whole file (length, checksum,
// count, every reserved bit) before it applies any of it.
const (
	snapMagic      = "CHSNAP"
	snapVersion    = 1
	snapHeaderLen  = 16
	snapTrailerLen = 12
	snapFlagPeers  = 1
	snapRecLen     = 24
	snapRecPeerLen = 32
	snapPeerLenV4  = 4 + 2 + 1
	snapPeerLenV6  = 16 + 2 + 1
	snapSeeder     = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadSnapshot is wrapped by every error ReadSnapshot returns for a
// file it refuses: wrong magic or version, truncated, corrupted. Nothing of
// such a file is applied.
var ErrBadSnapshot = errors.New("peertable: bad snapshot")

// Restored is what ReadSnapshot put into the table.
type Restored struct {
	Swarms  int       // records applied
	PeersV4 int       // IPv4 peers added (not counting ones already present)
	PeersV6 int       // IPv6 peers added
	Written time.Time // when the snapshot was written
}

// Written is what WriteSnapshot wrote.
type Written struct {
	Swarms  int
	PeersV4 int
	PeersV6 int
	Bytes   int64
}

// WriteSnapshot writes the completed counts of every swarm that has
// completed downloads and, if withPeers is set, the peers not yet expired
// of every swarm, to w in the format drawn above.
//
// It walks the swarm index as Range does, without locks, and holds each
// swarm's writer lock while it copies that swarm (as the sweep does,
// never two at once), so every record is consistent in itself: counts and
// peers of one swarm as of one moment. The file as a whole is not a
// snapshot of one moment while announces continue (see Range for which
// swarms a walk sees); once the frontends have stopped it is exact.
func (t *Table) WriteSnapshot(w io.Writer, withPeers bool) (Written, error) {
	var wr Written
	var crc uint32
	buf := make([]byte, 0, 64<<10)
	flush := func() error {
		crc = crc32.Update(crc, castagnoli, buf)
		n, err := w.Write(buf)
		wr.Bytes += int64(n)
		buf = buf[:0]
		if err != nil {
			return fmt.Errorf("peertable: write snapshot: %w", err)
		}
		return nil
	}
	buf = append(buf, snapMagic...)
	var flags byte
	if withPeers {
		flags |= snapFlagPeers
	}
	buf = append(buf, snapVersion, flags)
	buf = binary.BigEndian.AppendUint64(buf, uint64(time.Now().Unix()))

	for i := range t.shards {
		for _, s := range t.shards[i].p.Load().s {
			if s == nil {
				continue
			}
			var n4, n6 int
			var ok bool
			buf, n4, n6, ok = t.appendSwarm(buf, s, withPeers)
			if !ok {
				continue
			}
			wr.Swarms++
			wr.PeersV4 += n4
			wr.PeersV6 += n6
			if len(buf) >= 60<<10 {
				if err := flush(); err != nil {
					return wr, err
				}
			}
		}
	}
	buf = binary.BigEndian.AppendUint64(buf, uint64(wr.Swarms))
	crc = crc32.Update(crc, castagnoli, buf)
	buf = binary.BigEndian.AppendUint32(buf, crc)
	n, err := w.Write(buf)
	wr.Bytes += int64(n)
	if err != nil {
		return wr, fmt.Errorf("peertable: write snapshot: %w", err)
	}
	return wr, nil
}

// appendSwarm appends the record of s to buf. It reports false, leaving
// buf as it was, for a swarm with nothing worth keeping.
func (t *Table) appendSwarm(buf []byte, s *swarm, withPeers bool) (_ []byte, n4, n6 int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead() {
		return buf, 0, 0, false
	}
	completed := s.state.Load() &^ deadBit
	start := len(buf)
	buf = append(buf, s.ih[:]...)
	buf = binary.BigEndian.AppendUint32(buf, completed)
	if !withPeers {
		if completed == 0 {
			return buf[:start], 0, 0, false
		}
		return buf, 0, 0, true
	}
	buf = append(buf, make([]byte, 8)...)
	now := t.stamp()
	buf, n4 = t.appendPeersLocked(buf, &s.v4, fam4, now)
	if v6 := s.v6.Load(); v6 != nil {
		buf, n6 = t.appendPeersLocked(buf, v6, fam6, now)
	}
	if completed == 0 && n4+n6 == 0 {
		return buf[:start], 0, 0, false
	}
	binary.BigEndian.PutUint32(buf[start+24:], uint32(n4))
	binary.BigEndian.PutUint32(buf[start+28:], uint32(n6))
	return buf, n4, n6, true
}

// appendPeersLocked appends the peers of set that are not stale.
func (t *Table) appendPeersLocked(buf []byte, set *peerSet, f family, now uint16) ([]byte, int) {
	v := set.vec.Load()
	if v == nil {
		return buf, 0
	}
	ns, nl := unpack(set.cnt.Load())
	capacity := len(v.e) / int(f)
	n := 0
	for _, r := range [2]struct {
		leech bool
		n     int
	}{{false, ns}, {true, nl}} {
		for i := range r.n {
			j := phys(capacity, r.leech, i)
			if t.stale(now, f.seenAt(v.e, j)) {
				continue
			}
			k := f.keyAt(v.e, j)
			if f == fam4 {
				buf = binary.BigEndian.AppendUint32(buf, uint32(k.tail>>32))
			} else {
				buf = binary.BigEndian.AppendUint64(buf, k.hi)
				buf = binary.BigEndian.AppendUint64(buf, k.lo)
			}
			buf = binary.BigEndian.AppendUint16(buf, uint16(k.tail>>16))
			var fl byte
			if !r.leech {
				fl = snapSeeder
			}
			buf = append(buf, fl)
			n++
		}
	}
	return buf, n
}

// ReadSnapshot reads a snapshot written by WriteSnapshot and adds it to
// t. The whole file is read and checked first; if any of it is wrong the
// error wraps ErrBadSnapshot and t is unchanged.
//
// A swarm's completed count becomes the larger of its current and its
// restored count. Restored peers are stamped with the table's current
// clock, so a peer that never announces again expires one PeerLifetime
// later; a peer already present keeps its entry.
//
// A swarm restored with a completed count but no peers would be removed
// by the next sweep, count and all, before its peers could come back. So
// for one PeerLifetime after ReadSnapshot the sweep keeps every empty
// swarm that has a completed count; after that, empty swarms are removed
// as before.
func (t *Table) ReadSnapshot(r io.Reader) (Restored, error) {
	var res Restored
	b, err := io.ReadAll(r)
	if err != nil {
		return res, fmt.Errorf("peertable: read snapshot: %w", err)
	}
	written, err := t.applySnapshot(b, nil) // check only
	if err != nil {
		return res, err
	}
	res.Written = written
	// Keep restored swarms before any is published, so that the sweep
	// cannot remove one between its creation and the end of the grace.
	until := t.now.Load() + int64(t.life)
	for {
		old := t.keepUntil.Load()
		if old >= until || t.keepUntil.CompareAndSwap(old, until) {
			break
		}
	}
	_, err = t.applySnapshot(b, &res) // the same bytes: cannot fail now
	return res, err
}

func badSnapshot(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
}

// applySnapshot checks b and, if res is not nil, applies it to t and
// counts what it added in res.
func (t *Table) applySnapshot(b []byte, res *Restored) (time.Time, error) {
	if len(b) < snapHeaderLen+snapTrailerLen {
		return time.Time{}, badSnapshot("%d bytes is shorter than an empty snapshot", len(b))
	}
	if string(b[:6]) != snapMagic {
		return time.Time{}, badSnapshot("not a snapshot (no %q magic)", snapMagic)
	}
	if b[6] != snapVersion {
		return time.Time{}, badSnapshot("version %d, want %d", b[6], snapVersion)
	}
	flags := b[7]
	if flags&^snapFlagPeers != 0 {
		return time.Time{}, badSnapshot("unknown flags %#x", flags)
	}
	end := len(b) - snapTrailerLen
	if got, want := crc32.Checksum(b[:end+8], castagnoli), binary.BigEndian.Uint32(b[end+8:]); got != want {
		return time.Time{}, badSnapshot("checksum %08x, want %08x (truncated or corrupted)", got, want)
	}
	written := time.Unix(int64(binary.BigEndian.Uint64(b[8:])), 0)
	count := binary.BigEndian.Uint64(b[end:])
	withPeers := flags&snapFlagPeers != 0
	var n uint64
	for off := snapHeaderLen; off < end; n++ {
		rec := b[off:end]
		recLen := snapRecLen
		var n4, n6 uint64
		if withPeers {
			if len(rec) < snapRecPeerLen {
				return written, badSnapshot("record %d at offset %d is truncated", n, off)
			}
			n4, n6 = uint64(binary.BigEndian.Uint32(rec[24:])), uint64(binary.BigEndian.Uint32(rec[28:]))
			l := snapRecPeerLen + n4*snapPeerLenV4 + n6*snapPeerLenV6
			if l > uint64(len(rec)) {
				return written, badSnapshot("record %d at offset %d is truncated", n, off)
			}
			recLen = int(l)
		} else if len(rec) < snapRecLen {
			return written, badSnapshot("record %d at offset %d is truncated", n, off)
		}
		rec = rec[:recLen]
		if c := binary.BigEndian.Uint32(rec[20:]); c >= deadBit {
			return written, badSnapshot("record %d: completed count %d out of range", n, c)
		}
		for p := snapRecPeerLen; p < recLen; {
			l := snapPeerLenV4
			if uint64(p) >= snapRecPeerLen+n4*snapPeerLenV4 {
				l = snapPeerLenV6
			}
			if rec[p+l-1]&^snapSeeder != 0 {
				return written, badSnapshot("record %d: unknown peer flags %#x", n, rec[p+l-1])
			}
			p += l
		}
		if res != nil {
			t.restoreSwarm(rec, int(n4), res)
		}
		off += recLen
	}
	if n != count {
		return written, badSnapshot("%d records, trailer says %d", n, count)
	}
	return written, nil
}

// restoreSwarm applies one checked record, which holds n4 IPv4 peers
// after its fixed part, if any.
func (t *Table) restoreSwarm(rec []byte, n4 int, res *Restored) {
	ih := InfoHash(rec[:20])
	h := t.hashIH(&ih)
	sh := &t.shards[h&t.mask]
	for {
		b := sh.p.Load()
		s := b.find(h, &ih)
		if s == nil {
			// As in Announce: filled before it is published.
			s = &swarm{ih: ih}
			a4, a6 := t.restoreLocked(s, rec, n4)
			if !sh.p.CompareAndSwap(b, t.rebuild(b, s)) {
				continue
			}
			res.Swarms++
			res.PeersV4 += a4
			res.PeersV6 += a6
			return
		}
		s.mu.Lock()
		if s.dead() {
			s.mu.Unlock()
			t.purge(sh)
			continue
		}
		a4, a6 := t.restoreLocked(s, rec, n4)
		s.mu.Unlock()
		res.Swarms++
		res.PeersV4 += a4
		res.PeersV6 += a6
		return
	}
}

// restoreLocked applies a record to s and returns how many peers it added.
func (t *Table) restoreLocked(s *swarm, rec []byte, n4 int) (added4, added6 int) {
	if c := binary.BigEndian.Uint32(rec[20:]); c > s.state.Load()&^deadBit {
		s.state.Store(s.state.Load()&deadBit | c)
	}
	now := t.stamp()
	for p, i := snapRecPeerLen, 0; p < len(rec); i++ {
		var k peerKey
		f := fam4
		set := &s.v4
		if i < n4 {
			k.tail = uint64(binary.BigEndian.Uint32(rec[p:]))<<32 | uint64(binary.BigEndian.Uint16(rec[p+4:]))<<16
			p += snapPeerLenV4
		} else {
			f = fam6
			if set = s.v6.Load(); set == nil {
				set = new(peerSet)
				s.v6.Store(set)
			}
			k.hi, k.lo = binary.BigEndian.Uint64(rec[p:]), binary.BigEndian.Uint64(rec[p+8:])
			k.tail = uint64(binary.BigEndian.Uint16(rec[p+16:])) << 16
			p += snapPeerLenV6
		}
		if set.findLocked(t, f, &k) != 0 {
			continue
		}
		set.addLocked(t, f, &k, rec[p-1]&snapSeeder == 0, now)
		if f == fam4 {
			added4++
		} else {
			added6++
		}
	}
	return added4, added6
}
