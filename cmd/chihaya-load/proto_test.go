package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

func TestAppendConnect(t *testing.T) {
	got := appendConnect(nil, 0x01020304)
	want, _ := hex.DecodeString("0000041727101980" + "00000000" + "01020304")
	if !bytes.Equal(got, want) {
		t.Errorf("appendConnect = %x, want %x", got, want)
	}
}

func TestAppendAnnounce(t *testing.T) {
	a := &announce{
		ConnID:  0x1122334455667788,
		TxID:    0xaabbccdd,
		Left:    1 << 30,
		Event:   eventStarted,
		Key:     0x01020304,
		NumWant: -1,
		Port:    6881,
	}
	for i := range a.InfoHash {
		a.InfoHash[i] = byte(i)
		a.PeerID[i] = byte(0x80 + i)
	}
	b := appendAnnounce(nil, a)
	if len(b) != announceReqLen {
		t.Fatalf("len(appendAnnounce) = %d, want %d", len(b), announceReqLen)
	}
	// Every field at the offset BEP 15 gives it.
	checks := []struct {
		name string
		off  int
		got  uint64
		want uint64
	}{
		{"connection_id", 0, binary.BigEndian.Uint64(b[0:]), a.ConnID},
		{"action", 8, uint64(binary.BigEndian.Uint32(b[8:])), actionAnnounce},
		{"transaction_id", 12, uint64(binary.BigEndian.Uint32(b[12:])), uint64(a.TxID)},
		{"downloaded", 56, binary.BigEndian.Uint64(b[56:]), 0},
		{"left", 64, binary.BigEndian.Uint64(b[64:]), a.Left},
		{"uploaded", 72, binary.BigEndian.Uint64(b[72:]), 0},
		{"event", 80, uint64(binary.BigEndian.Uint32(b[80:])), eventStarted},
		{"ip", 84, uint64(binary.BigEndian.Uint32(b[84:])), 0},
		{"key", 88, uint64(binary.BigEndian.Uint32(b[88:])), uint64(a.Key)},
		{"num_want", 92, uint64(binary.BigEndian.Uint32(b[92:])), 0xffffffff},
		{"port", 96, uint64(binary.BigEndian.Uint16(b[96:])), 6881},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("announce %s at %d = %#x, want %#x", c.name, c.off, c.got, c.want)
		}
	}
	if !bytes.Equal(b[16:36], a.InfoHash[:]) || !bytes.Equal(b[36:56], a.PeerID[:]) {
		t.Errorf("announce info_hash, peer_id = %x, %x; want %x, %x", b[16:36], b[36:56], a.InfoHash, a.PeerID)
	}
}

func TestAppendScrape(t *testing.T) {
	h1, h2 := [20]byte{1}, [20]byte{19: 2}
	b := appendScrape(nil, 7, 9, h1, h2)
	if len(b) != scrapeReqLen+40 {
		t.Fatalf("len(appendScrape) = %d, want %d", len(b), scrapeReqLen+40)
	}
	if binary.BigEndian.Uint64(b) != 7 || binary.BigEndian.Uint32(b[8:]) != actionScrape ||
		binary.BigEndian.Uint32(b[12:]) != 9 || !bytes.Equal(b[16:36], h1[:]) || !bytes.Equal(b[36:], h2[:]) {
		t.Errorf("appendScrape = %x", b)
	}
}

// reply builds a reply from big-endian 32-bit words and raw byte strings.
func reply(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case int:
			b = binary.BigEndian.AppendUint32(b, uint32(p))
		case string:
			b = append(b, p...)
		case []byte:
			b = append(b, p...)
		}
	}
	return b
}

var (
	peer4   = []byte{127, 0, 0, 1, 0x1a, 0xe1}
	peer4p0 = []byte{127, 0, 0, 1, 0, 0}
	peer6   = append(append(make([]byte, 15), 1), 0x1a, 0xe1)
	mapped6 = append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1}, 0x1a, 0xe1)
)

func TestParseAnnounce(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		peerLen int
		numWant int32
		want    bad
		peers   int
	}{
		{"no peers", reply(1, 5, 1800, 0, 1), peerLenIPv4, 50, badNone, 0},
		{"two v4 peers", reply(1, 5, 1800, 1, 2, peer4, peer4), peerLenIPv4, 50, badNone, 2},
		{"one v6 peer", reply(1, 5, 1800, 1, 1, peer6), peerLenIPv6, 50, badNone, 1},
		{"default numwant", reply(1, 5, 1800, 1, 2, peer4, peer4), peerLenIPv4, -1, badNone, 2},
		{"short", reply(1, 5, 1800, 0), peerLenIPv4, 50, badShort, 0},
		{"v4 peer to v6", reply(1, 5, 1800, 1, 1, peer4), peerLenIPv6, 50, badPeerSize, 0},
		{"ragged", reply(1, 5, 1800, 1, 1, peer4, "x"), peerLenIPv4, 50, badPeerSize, 0},
		{"mapped v4 in v6", reply(1, 5, 1800, 1, 1, mapped6), peerLenIPv6, 50, badPeerSize, 0},
		{"more than numwant", reply(1, 5, 1800, 1, 2, peer4, peer4), peerLenIPv4, 1, badCounts, 0},
		{"more than swarm", reply(1, 5, 1800, 0, 1, peer4, peer4), peerLenIPv4, 50, badCounts, 0},
		{"zero interval", reply(1, 5, 0, 0, 1), peerLenIPv4, 50, badCounts, 0},
		{"negative seeders", reply(1, 5, 1800, 0, -1), peerLenIPv4, 50, badCounts, 0},
		{"port zero", reply(1, 5, 1800, 0, 1, peer4p0), peerLenIPv4, 50, badCounts, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, why := parseAnnounce(tt.b, tt.peerLen, tt.numWant)
			if why != tt.want {
				t.Fatalf("parseAnnounce(%x) = %s, want %s", tt.b, badNames[why], badNames[tt.want])
			}
			if why == badNone && r.Peers != tt.peers {
				t.Errorf("parseAnnounce(%x).Peers = %d, want %d", tt.b, r.Peers, tt.peers)
			}
		})
	}
}

func TestParseScrape(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		n    int
		want bad
	}{
		{"one", reply(2, 1, 3, 4, 5), 1, badNone},
		{"two", reply(2, 1, 3, 4, 5, 0, 0, 0), 2, badNone},
		{"header only", reply(2, 1), 1, badShort},
		{"one of two", reply(2, 1, 3, 4, 5), 2, badLength},
		{"ragged", reply(2, 1, 3, 4, 5, "x"), 1, badLength},
		{"negative", reply(2, 1, 3, -4, 5), 1, badCounts},
	}
	for _, tt := range tests {
		if why := parseScrape(tt.b, tt.n); why != tt.want {
			t.Errorf("%s: parseScrape(%x, %d) = %s, want %s", tt.name, tt.b, tt.n, badNames[why], badNames[tt.want])
		}
	}
}

func TestParseConnect(t *testing.T) {
	b := reply(0, 9, 0x11223344, 0x55667788)
	if id, why := parseConnect(b); why != badNone || id != 0x1122334455667788 {
		t.Errorf("parseConnect(%x) = %#x, %s; want 0x1122334455667788, none", b, id, badNames[why])
	}
	if _, why := parseConnect(b[:15]); why != badLength {
		t.Errorf("parseConnect(15 bytes) = %s, want length", badNames[why])
	}
	if _, _, ok := replyHeader(b[:7]); ok {
		t.Error("replyHeader(7 bytes) ok, want not ok")
	}
	if got := errorText(reply(3, 9, "no such torrent")); got != "no such torrent" {
		t.Errorf("errorText = %q, want %q", got, "no such torrent")
	}
}

func TestHistogram(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<20; us += 1 + us/97 {
		i := histBucket(us)
		if i < prev || i >= histBuckets {
			t.Fatalf("histBucket(%d) = %d after %d", us, i, prev)
		}
		if lo, hi := histLow(i), histLow(i+1); us < lo || us >= hi {
			t.Fatalf("histBucket(%d) = %d, which holds [%d, %d)", us, i, lo, hi)
		}
		prev = i
	}
	if i := histBucket(1 << 40); i != histBuckets-1 {
		t.Errorf("histBucket(huge) = %d, want %d", i, histBuckets-1)
	}
	var s snapshot
	for us := uint64(1); us <= 1000; us++ {
		s.hist[histBucket(us)]++
	}
	for _, q := range []struct {
		q    float64
		want uint64
	}{{0.5, 500}, {0.99, 990}} {
		got := s.quantile(q.q)
		if got < q.want*97/100 || got > q.want*103/100 {
			t.Errorf("quantile(%v) = %d, want %d within 3%%", q.q, got, q.want)
		}
	}
}

func TestParseEventMix(t *testing.T) {
	m, err := parseEventMix(defaultEvents)
	if err != nil {
		t.Fatalf("parseEventMix(%q): %v", defaultEvents, err)
	}
	if m.cum[3] != 100 {
		t.Errorf("default weights sum to %d, want 100", m.cum[3])
	}
	m, err = parseEventMix("stopped=1")
	if err != nil {
		t.Fatal(err)
	}
	p := newPicker(&workload{hashes: make([][20]byte, 1), peers: 1}, 1, 0)
	for range 100 {
		if e := m.pick(p.r); e != eventStopped {
			t.Fatalf("pick from stopped=1 = %d, want %d", e, eventStopped)
		}
	}
	for _, bad := range []string{"", "none", "none=x", "bogus=1", "none=0"} {
		if _, err := parseEventMix(bad); err == nil {
			t.Errorf("parseEventMix(%q) succeeded, want error", bad)
		}
	}
}

func TestInfoHashes(t *testing.T) {
	a, b := infoHashes(1, 3), infoHashes(1, 5)
	if a[2] != b[2] || a[0] == a[1] {
		t.Errorf("infoHashes not deterministic or not distinct: %x, %x", a, b)
	}
	if c := infoHashes(2, 1); c[0] == a[0] {
		t.Errorf("infoHashes(2) = infoHashes(1) = %x", c[0])
	}
	var out strings.Builder
	if err := writeHashes(&out, a); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 || lines[1] != hex.EncodeToString(a[1][:]) {
		t.Errorf("writeHashes = %q", out.String())
	}
}

func TestPrefillPeersDistinct(t *testing.T) {
	wl := &workload{hashes: infoHashes(1, 7)}
	type key struct {
		ih   [20]byte
		port uint16
	}
	seen := make(map[key]bool)
	var a announce
	for j := range int64(7 * 300) {
		wl.prefillJob(&a, j)
		k := key{a.InfoHash, a.Port}
		if seen[k] {
			t.Fatalf("prefill job %d repeats torrent %x port %d", j, a.InfoHash[:4], a.Port)
		}
		seen[k] = true
	}
}
