package peertable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// fillSnapshotTable announces a mix of IPv4 and IPv6 seeders and leechers,
// with completions, into a few swarms.
func fillSnapshotTable(tb testing.TB, t *Table) {
	tb.Helper()
	for i := range 40 {
		ih := hashN(i % 5)
		ev := EventNone
		if i%3 == 0 {
			ev = EventCompleted
		}
		t.Announce(&Announce{InfoHash: ih, Addr: addr4(i), Seeder: i%2 == 0, Event: ev}, nil)
		t.Announce(&Announce{InfoHash: ih, Addr: addr6(i), Seeder: i%3 == 0}, nil)
	}
	// A swarm with a count but, after its peer stopped, no peers.
	t.Announce(&Announce{InfoHash: hashN(99), Addr: addr4(1), Event: EventCompleted, Seeder: true}, nil)
	t.Announce(&Announce{InfoHash: hashN(99), Addr: addr4(1), Event: EventStopped}, nil)
}

func sorted(a []netip.AddrPort) []netip.AddrPort {
	return slices.SortedFunc(slices.Values(a), netip.AddrPort.Compare)
}

func snapshot(tb testing.TB, t *Table, withPeers bool) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := t.WriteSnapshot(&buf, withPeers)
	if err != nil {
		tb.Fatal(err)
	}
	if w.Bytes != int64(buf.Len()) {
		tb.Errorf("WriteSnapshot reported %d bytes, wrote %d", w.Bytes, buf.Len())
	}
	return buf.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, withPeers := range []bool{false, true} {
		t.Run(fmt.Sprintf("peers=%v", withPeers), func(t *testing.T) {
			src := newTable(t, Config{})
			fillSnapshotTable(t, src)
			b := snapshot(t, src, withPeers)

			dst := newTable(t, Config{})
			res, err := dst.ReadSnapshot(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("ReadSnapshot: %v", err)
			}
			checkTable(t, dst)
			if d := time.Since(res.Written); d < 0 || d > time.Minute {
				t.Errorf("Restored.Written = %v, want about now", res.Written)
			}
			want := Restored{Swarms: 6, PeersV4: 40, PeersV6: 40, Written: res.Written}
			if !withPeers {
				want.PeersV4, want.PeersV6 = 0, 0
			}
			if res != want {
				t.Errorf("ReadSnapshot = %+v, want %+v", res, want)
			}
			for _, i := range []int{0, 1, 2, 3, 4, 99} {
				ih := hashN(i)
				got, c := dst.Scrape(ih), src.Scrape(ih)
				if !withPeers {
					c.Seeders, c.Leechers = 0, 0
				}
				if got != c {
					t.Errorf("swarm %d: Scrape = %+v, want %+v", i, got, c)
				}
				if !withPeers {
					continue
				}
				for _, v6 := range []bool{false, true} {
					s1, l1 := src.contents(ih, v6)
					s2, l2 := dst.contents(ih, v6)
					if !slices.Equal(sorted(s1), sorted(s2)) || !slices.Equal(sorted(l1), sorted(l2)) {
						t.Errorf("swarm %d v6=%v: restored seeders %v leechers %v, want %v %v", i, v6, s2, l2, s1, l1)
					}
				}
			}
			// Loading the same snapshot again adds nothing.
			again, err := dst.ReadSnapshot(bytes.NewReader(b))
			if err != nil || again.PeersV4+again.PeersV6 != 0 {
				t.Errorf("second ReadSnapshot = %+v, %v; want no peers added", again, err)
			}
		})
	}
}

// TestSnapshotV1Files loads snapshots that the code of commit 5e5aab5
// wrote (testdata/snapshot_v1_gen.go): without peers, with peers, and
// with peers from a table with Config.Accounting, which that code had.
// Files written before Accounting was removed must still load, and give
// the same table whichever way they were written.
func TestSnapshotV1Files(t *testing.T) {
	var seeders4, leechers4 []string // swarm 0xd4: more peers than a set scans without its index
	for i := 1; i <= 40; i++ {
		if p := fmt.Sprintf("198.51.100.%d:6881", i); i%4 == 0 {
			seeders4 = append(seeders4, p)
		} else {
			leechers4 = append(leechers4, p)
		}
	}
	swarms := []struct {
		ih                byte
		completed         uint32
		seeders, leechers []string // both families
	}{
		{0xa1, 1, []string{"10.0.0.1:6881", "[2001:db8::a1]:6881"}, []string{"10.0.0.2:6882", "10.0.0.3:6883"}},
		{0xb2, 0, []string{"[2001:db8::1]:51413"}, []string{"[2001:db8::2]:51413", "192.0.2.7:1"}},
		{0xc3, 2, nil, nil},
		{0xd4, 10, seeders4, leechers4},
	}
	parse := func(ss []string) []netip.AddrPort {
		var out []netip.AddrPort
		for _, s := range ss {
			out = append(out, netip.MustParseAddrPort(s))
		}
		return sorted(out)
	}
	written := time.Unix(1_796_654_112, 0) // when the generator ran
	for _, tt := range []struct {
		file      string
		withPeers bool
	}{
		{"snapshot_v1_counts.snap", false},
		{"snapshot_v1_peers.snap", true},
		{"snapshot_v1_peers_accounting.snap", true},
	} {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			tb := newTable(t, Config{})
			res, err := tb.ReadSnapshot(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("ReadSnapshot(%s): %v", tt.file, err)
			}
			checkTable(t, tb)
			want := Restored{Swarms: 4, PeersV4: 44, PeersV6: 3}
			if !tt.withPeers {
				want = Restored{Swarms: 3} // swarm 0xb2 has peers but no count
			}
			if !res.Written.Equal(written) {
				t.Errorf("Restored.Written = %v, want %v", res.Written, written)
			}
			if res.Written = (time.Time{}); res != want {
				t.Errorf("ReadSnapshot(%s) = %+v, want %+v", tt.file, res, want)
			}
			for _, sw := range swarms {
				ih := InfoHash{sw.ih}
				ws, wl := parse(sw.seeders), parse(sw.leechers)
				if !tt.withPeers {
					ws, wl = nil, nil
				}
				wc := Counts{Seeders: uint32(len(ws)), Leechers: uint32(len(wl)), Completed: sw.completed}
				if got := tb.Scrape(ih); got != wc {
					t.Errorf("swarm %x: Scrape = %+v, want %+v", sw.ih, got, wc)
				}
				var gs, gl []netip.AddrPort
				for _, v6 := range []bool{false, true} {
					s, l := tb.contents(ih, v6)
					gs, gl = append(gs, s...), append(gl, l...)
				}
				if gs, gl = sorted(gs), sorted(gl); !slices.Equal(gs, ws) || !slices.Equal(gl, wl) {
					t.Errorf("swarm %x: seeders %v leechers %v, want %v %v", sw.ih, gs, gl, ws, wl)
				}
			}
		})
	}
}

func TestSnapshotEmptyTable(t *testing.T) {
	b := snapshot(t, newTable(t, Config{}), true)
	if len(b) != snapHeaderLen+snapTrailerLen {
		t.Errorf("empty snapshot is %d bytes, want %d", len(b), snapHeaderLen+snapTrailerLen)
	}
	dst := newTable(t, Config{})
	res, err := dst.ReadSnapshot(bytes.NewReader(b))
	if err != nil || res.Swarms != 0 {
		t.Errorf("ReadSnapshot(empty) = %+v, %v; want nothing, nil", res, err)
	}
	if st := dst.Stats(); st != (Stats{}) {
		t.Errorf("Stats after empty snapshot = %+v", st)
	}
}

// reseal recomputes the trailer checksum of a snapshot edited by a test.
func reseal(b []byte) []byte {
	end := len(b) - 4
	binary.BigEndian.PutUint32(b[end:], crc32.Checksum(b[:end], castagnoli))
	return b
}

func TestSnapshotRefused(t *testing.T) {
	src := newTable(t, Config{})
	fillSnapshotTable(t, src)
	good := snapshot(t, src, true)
	edit := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-1]},
		{"truncated-header", good[:10]},
		{"cut-record", edit(func(b []byte) []byte {
			return reseal(append(b[:snapHeaderLen+10], b[len(b)-snapTrailerLen:]...))
		})},
		{"flipped-bit", edit(func(b []byte) []byte { b[40] ^= 1; return b })},
		{"wrong-magic", edit(func(b []byte) []byte { b[0] = 'X'; return reseal(b) })},
		{"wrong-version", edit(func(b []byte) []byte { b[6] = 2; return reseal(b) })},
		{"unknown-flags", edit(func(b []byte) []byte { b[7] |= 4; return reseal(b) })},
		{"wrong-count", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[len(b)-snapTrailerLen:], 7)
			return reseal(b)
		})},
		{"appended-garbage", edit(func(b []byte) []byte {
			b = slices.Insert(b, len(b)-snapTrailerLen, 1, 2, 3)
			return reseal(b)
		})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := newTable(t, Config{})
			res, err := dst.ReadSnapshot(bytes.NewReader(c.b))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Errorf("ReadSnapshot = %+v, %v; want ErrBadSnapshot", res, err)
			}
			if st := dst.Stats(); st != (Stats{}) {
				t.Errorf("refused snapshot applied: Stats = %+v", st)
			}
		})
	}
}

// TestSnapshotKeepsRestoredCounts: a restored count with no peers outlives
// sweeps for one lifetime, waiting for its peers; then the empty swarm
// goes as any other.
func TestSnapshotKeepsRestoredCounts(t *testing.T) {
	src := newTable(t, Config{})
	fillSnapshotTable(t, src)
	b := snapshot(t, src, false)

	start := time.Unix(1_700_000_000, 0)
	dst := newTable(t, Config{PeerLifetime: time.Minute})
	dst.Tick(start)
	if _, err := dst.ReadSnapshot(bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	want := src.Scrape(hashN(99)).Completed
	dst.Tick(start.Add(59 * time.Second))
	dst.Sweep()
	if got := dst.Scrape(hashN(99)).Completed; got != want {
		t.Errorf("within a lifetime: Completed = %d, want %d", got, want)
	}
	// A peer that comes back keeps the count alive with it.
	dst.Announce(&Announce{InfoHash: hashN(0), Addr: addr4(1)}, nil)
	dst.Tick(start.Add(61 * time.Second))
	dst.Sweep()
	checkTable(t, dst)
	if got := dst.Scrape(hashN(99)); got != (Counts{}) {
		t.Errorf("after a lifetime: Scrape(empty swarm) = %+v, want zero", got)
	}
	if got, want := dst.Scrape(hashN(0)).Completed, src.Scrape(hashN(0)).Completed; got != want || got == 0 {
		t.Errorf("swarm with a returning peer: Completed = %d, want %d", got, want)
	}
	if st := dst.Stats(); st.Swarms != 1 {
		t.Errorf("Stats = %+v, want only the swarm with a peer", st)
	}
}

// TestSnapshotPeersExpire: restored peers are stamped now and expire one
// lifetime later unless they announce.
func TestSnapshotPeersExpire(t *testing.T) {
	src := newTable(t, Config{})
	fillSnapshotTable(t, src)
	start := time.Unix(1_700_000_000, 0)
	dst := newTable(t, Config{PeerLifetime: time.Minute})
	dst.Tick(start)
	if _, err := dst.ReadSnapshot(bytes.NewReader(snapshot(t, src, true))); err != nil {
		t.Fatal(err)
	}
	dst.Tick(start.Add(50 * time.Second))
	if n := dst.Sweep(); n != 0 {
		t.Errorf("Sweep within a lifetime removed %d peers", n)
	}
	dst.Tick(start.Add(2 * time.Minute))
	if n := dst.Sweep(); n != 80 {
		t.Errorf("Sweep after a lifetime removed %d peers, want 80", n)
	}
	checkTable(t, dst)
}

func FuzzReadSnapshot(f *testing.F) {
	src := newTable(f, Config{})
	fillSnapshotTable(f, src)
	f.Add(snapshot(f, src, true))
	f.Add(snapshot(f, src, false))
	f.Add(snapshot(f, newTable(f, Config{}), true))
	f.Add([]byte("CHSNAP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, b := range [][]byte{b, reseal(append(slices.Clone(b), make([]byte, 4)...))} {
			dst := newTable(t, Config{Swarms: 16})
			if _, err := dst.ReadSnapshot(bytes.NewReader(b)); err != nil {
				if !errors.Is(err, ErrBadSnapshot) {
					t.Fatalf("ReadSnapshot error %v does not wrap ErrBadSnapshot", err)
				}
				if st := dst.Stats(); st != (Stats{}) {
					t.Fatalf("refused snapshot applied: Stats = %+v", st)
				}
				continue
			}
			checkTable(t, dst)
		}
	})
}

// TestSnapshotRandomBytes feeds ReadSnapshot random files with a valid
// header and checksum, so that the record parser, not the checksum, has
// to refuse them.
func TestSnapshotRandomBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, snapHeaderLen+r.IntN(200)+snapTrailerLen)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		copy(b, snapMagic)
		b[6], b[7] = snapVersion, byte(r.IntN(2))
		if r.IntN(2) == 0 {
			binary.BigEndian.PutUint64(b[len(b)-snapTrailerLen:], uint64(r.IntN(3)))
		}
		reseal(b)
		dst := newTable(t, Config{Swarms: 16})
		if _, err := dst.ReadSnapshot(bytes.NewReader(b)); err != nil {
			if st := dst.Stats(); st != (Stats{}) {
				t.Fatalf("refused snapshot %x applied: Stats = %+v", b, st)
			}
			continue
		}
		checkTable(t, dst)
	}
}

// BenchmarkWriteSnapshot writes 100,000 swarms holding 1,000,000 IPv4
// peers, as BenchmarkMemory fills them, and reads them back into a new
// table.
func BenchmarkWriteSnapshot(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a table of a million peers")
	}
	const peers, swarms = 1_000_000, 100_000
	tb := newTable(b, Config{Swarms: swarms})
	r := rand.New(rand.NewPCG(1, 2))
	a := &Announce{}
	for i := range peers {
		binary.BigEndian.PutUint64(a.InfoHash[:], r.Uint64N(swarms))
		a.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), 6881)
		a.Seeder = i%4 == 0
		a.Event = EventNone
		if i%4 == 0 {
			a.Event = EventCompleted
		}
		tb.Announce(a, nil)
	}
	for _, withPeers := range []bool{false, true} {
		b.Run(fmt.Sprintf("peers=%v", withPeers), func(b *testing.B) {
			var buf bytes.Buffer
			var w Written
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				var err error
				if w, err = tb.WriteSnapshot(&buf, withPeers); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(w.Bytes), "file-bytes")
			b.ReportMetric(float64(w.Swarms), "swarms")
		})
	}
	b.Run("read/peers=true", func(b *testing.B) {
		var buf bytes.Buffer
		if _, err := tb.WriteSnapshot(&buf, true); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(buf.Len()))
		b.ReportAllocs()
		for b.Loop() {
			dst := newTable(b, Config{Swarms: swarms})
			if _, err := dst.ReadSnapshot(bytes.NewReader(buf.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
	})
}
