package httpcompat

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/chihaya/chihaya/peertable"
)

// escape percent-encodes every byte of b, as careful clients do.
func escape(b []byte) string {
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte('%')
		sb.WriteByte(hex[c>>4])
		sb.WriteByte(hex[c&0xf])
	}
	return sb.String()
}

func fill(c byte) (a [20]byte) {
	for i := range a {
		a[i] = c
	}
	return a
}

const (
	ih1 = "%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14"
	id1 = "-qB4650-abcdefghijkl"
)

var ih1Bytes = peertable.InfoHash{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}

func TestParseAnnounce(t *testing.T) {
	base := "info_hash=" + ih1 + "&peer_id=" + id1 + "&port=6881&left=0"
	want := func(f func(q *AnnounceQuery)) AnnounceQuery {
		q := AnnounceQuery{InfoHash: ih1Bytes, PeerID: [20]byte([]byte(id1)), Port: 6881, NumWant: -1, Compact: true}
		if f != nil {
			f(&q)
		}
		return q
	}
	tests := []struct {
		name, query string
		want        AnnounceQuery
	}{
		{"minimal", base, want(nil)},
		{"all", base[:len(base)-len("&left=0")] + "&uploaded=10&downloaded=20&left=30&event=started&numwant=25&key=A1b2C3d4&compact=0&no_peer_id=1&trackerid=x&supportcrypto=1",
			want(func(q *AnnounceQuery) {
				q.Uploaded, q.Downloaded, q.Left = 10, 20, 30
				q.Event, q.NumWant, q.Key, q.Compact = peertable.EventStarted, 25, 0xa1b2c3d4, false
			})},
		{"raw binary and unreserved bytes", "info_hash=ab%20cd~.-_efghijkl%FFop&peer_id=" + id1 + "&port=1&left=1",
			want(func(q *AnnounceQuery) {
				q.InfoHash = peertable.InfoHash([]byte("ab cd~.-_efghijkl\xffop"))
				q.Port, q.Left = 1, 1
			})},
		// '+' is a space, as in every form-encoded query; a client meaning
		// the byte 0x2B sends %2B.
		{"plus is space", "info_hash=++++++++++++++++++++&peer_id=%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B&port=1&left=0",
			want(func(q *AnnounceQuery) {
				q.InfoHash, q.PeerID, q.Port = fill(' '), fill('+'), 1
			})},
		{"lower-case hex and encoded names", "info%5Fhash=%aa%bb%cc%dd%ee%ff%aa%bb%cc%dd%ee%ff%aa%bb%cc%dd%ee%ff%aa%bb&peer_id=" + id1 + "&p%6Frt=2&left=0",
			want(func(q *AnnounceQuery) {
				q.InfoHash = peertable.InfoHash{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0xaa, 0xbb}
				q.Port = 2
			})},
		{"first occurrence wins", base + "&port=7&event=stopped&event=bogus&left=9", want(func(q *AnnounceQuery) { q.Event = peertable.EventStopped })},
		{"empty items and empty event", "&&" + base + "&&event=&", want(nil)},
		{"events", base + "&event=completed", want(func(q *AnnounceQuery) { q.Event = peertable.EventCompleted })},
		{"paused is none", base + "&event=paused", want(nil)},
		{"numwant zero", base + "&numwant=0", want(func(q *AnnounceQuery) { q.NumWant = 0 })},
		{"numwant negative", base + "&numwant=-1", want(nil)},
		{"numwant huge", base + "&numwant=99999999999999999999999", want(func(q *AnnounceQuery) { q.NumWant = 1<<31 - 1 })},
		{"numwant signed", base + "&numwant=%2B5", want(func(q *AnnounceQuery) { q.NumWant = 5 })},
		{"key decimal", base + "&key=4294967295", want(func(q *AnnounceQuery) { q.Key = 4294967295 })},
		{"key short hex", base + "&key=ff", want(func(q *AnnounceQuery) { q.Key = 0xff })},
		{"key digits read as hex", base + "&key=12345678", want(func(q *AnnounceQuery) { q.Key = 0x12345678 })},
		{"key other is hashed", base + "&key=a", want(func(q *AnnounceQuery) { q.Key = 0xa })},
		{"left max", "info_hash=" + ih1 + "&peer_id=" + id1 + "&port=65535&left=18446744073709551615",
			want(func(q *AnnounceQuery) { q.Port, q.Left = 65535, 1<<64-1 })},
		{"unknown long names", base + "&averyveryverylongname=1&info_hash_x=2", want(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q AnnounceQuery
			if err := ParseAnnounce(tt.query, &q); err != nil {
				t.Fatalf("ParseAnnounce(%q) = %v", tt.query, err)
			}
			if q != tt.want {
				t.Errorf("ParseAnnounce(%q) =\n%+v, want\n%+v", tt.query, q, tt.want)
			}
		})
	}
}

func TestAnnounceIPParams(t *testing.T) {
	base := "info_hash=" + ih1 + "&peer_id=" + id1 + "&port=6881&left=0"
	addr := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	tests := []struct {
		query          string
		ip, ipv4, ipv6 string
	}{
		{"", "", "", ""},
		{"&ip=10.0.0.1&ipv4=10.0.0.2%3A80&ipv6=%5B2001%3Adb8%3A%3A1%5D%3A6881", "10.0.0.1", "10.0.0.2", "2001:db8::1"},
		{"&ip=2001:db8::2&ipv6=2001:db8::3", "2001:db8::2", "", "2001:db8::3"},
		{"&ip=tracker.example&ipv6=fe80::1%25eth0&ipv4=::ffff:10.0.0.3", "", "10.0.0.3", ""},
		{"&ipv6=" + strings.Repeat("0", 60) + "::1", "", "", ""},
		{"&ip=10.0.0.1&ip=10.0.0.2", "10.0.0.1", "", ""},
	}
	for _, tt := range tests {
		var q AnnounceQuery
		if err := ParseAnnounce(base+tt.query, &q); err != nil {
			t.Fatalf("ParseAnnounce(%q) = %v", base+tt.query, err)
		}
		ip, ipv4, ipv6 := q.IPParams()
		if ip != addr(tt.ip) || ipv4 != addr(tt.ipv4) || ipv6 != addr(tt.ipv6) {
			t.Errorf("ParseAnnounce(%q).IPParams() = %v, %v, %v, want %q, %q, %q", tt.query, ip, ipv4, ipv6, tt.ip, tt.ipv4, tt.ipv6)
		}
	}
}

func TestParseAnnounceKeyHashed(t *testing.T) {
	var q1, q2 AnnounceQuery
	base := "info_hash=" + ih1 + "&peer_id=" + id1 + "&port=6881&left=0&key="
	if err := ParseAnnounce(base+"not-hex-at-all", &q1); err != nil {
		t.Fatal(err)
	}
	if err := ParseAnnounce(base+"not-hex-at-alm", &q2); err != nil {
		t.Fatal(err)
	}
	if q1.Key == q2.Key || q1.Key == 0 {
		t.Errorf("hashed keys %#x and %#x, want distinct and non-zero", q1.Key, q2.Key)
	}
}

func TestParseAnnounceErrors(t *testing.T) {
	ok := map[string]string{"info_hash": ih1, "peer_id": id1, "port": "6881", "left": "0"}
	query := func(override, value string) string {
		var parts []string
		for _, k := range []string{"info_hash", "peer_id", "port", "left"} {
			v := ok[k]
			if k == override {
				if value == "-" {
					continue
				}
				v = value
			}
			parts = append(parts, k+"="+v)
		}
		return strings.Join(parts, "&")
	}
	tests := []struct {
		name, query string
		want        error
	}{
		{"missing info_hash", query("info_hash", "-"), errNoInfoHash},
		{"missing peer_id", query("peer_id", "-"), errNoPeerID},
		{"missing port", query("port", "-"), errNoPort},
		{"missing left", query("left", "-"), errNoLeft},
		{"empty query", "", errNoInfoHash},
		{"short info_hash", query("info_hash", ih1[:len(ih1)-3]), errInfoHash},
		{"long info_hash", query("info_hash", ih1+"%15"), errInfoHash},
		{"empty info_hash", query("info_hash", ""), errInfoHash},
		{"short peer_id", query("peer_id", "abc"), errPeerID},
		{"bad escape", query("info_hash", "%zz"+ih1[3:]), ErrMalformedQuery},
		{"truncated escape", query("left", "0%2"), ErrMalformedQuery},
		{"bad escape in unknown value", query("left", "0&foo=%"), ErrMalformedQuery},
		{"bad escape in name", query("left", "0&%g1=1"), ErrMalformedQuery},
		{"port too big", query("port", "65536"), errPort},
		{"port not a number", query("port", "http"), errPort},
		{"port empty", query("port", ""), errPort},
		{"negative left", query("left", "-1"), errLeft},
		{"left overflow", query("left", "18446744073709551616"), errLeft},
		{"bad uploaded", query("left", "0&uploaded=1.5"), errUploaded},
		{"bad downloaded", query("left", "0&downloaded=%2B1"), errDownloaded},
		{"bad numwant", query("left", "0&numwant=ten"), errNumWant},
		{"numwant sign only", query("left", "0&numwant=-"), errNumWant},
		{"bad event", query("left", "0&event=start"), errEvent},
		{"long event", query("left", "0&event=completedd"), errEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q AnnounceQuery
			err := ParseAnnounce(tt.query, &q)
			if err != tt.want {
				t.Errorf("ParseAnnounce(%q) = %v, want %v", tt.query, err, tt.want)
			}
			var qe *QueryError
			if !errors.As(err, &qe) {
				t.Errorf("ParseAnnounce(%q) = %T, want a *QueryError", tt.query, err)
			}
		})
	}
}

func TestParseScrape(t *testing.T) {
	ih2 := escape(bytesOf(2))
	tests := []struct {
		name, query string
		max         int
		want        []peertable.InfoHash
		err         error
	}{
		{"none", "", 4, nil, nil},
		{"others ignored", "foo=bar&passkey=x", 4, nil, nil},
		{"one", "info_hash=" + ih1, 4, []peertable.InfoHash{ih1Bytes}, nil},
		{"several in order with repeats", "info_hash=" + ih2 + "&x=1&info_hash=" + ih1 + "&info_hash=" + ih2, 4,
			[]peertable.InfoHash{peertable.InfoHash(bytesOf(2)), ih1Bytes, peertable.InfoHash(bytesOf(2))}, nil},
		{"at the bound", "info_hash=" + ih1 + "&info_hash=" + ih1, 2, []peertable.InfoHash{ih1Bytes, ih1Bytes}, nil},
		{"over the bound", "info_hash=" + ih1 + "&info_hash=" + ih1 + "&info_hash=" + ih1, 2, nil, ErrTooManyInfoHashes},
		{"short", "info_hash=" + ih1 + "&info_hash=abc", 4, nil, errInfoHash},
		{"malformed", "info_hash=" + ih1 + "&x=%", 4, nil, ErrMalformedQuery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseScrape(tt.query, nil, tt.max)
			if err != tt.err {
				t.Fatalf("ParseScrape(%q) error = %v, want %v", tt.query, err, tt.err)
			}
			if err == nil && !equalHashes(got, tt.want) {
				t.Errorf("ParseScrape(%q) = %x, want %x", tt.query, got, tt.want)
			}
		})
	}
}

func bytesOf(c byte) []byte {
	a := fill(c)
	return a[:]
}

func equalHashes(a, b []peertable.InfoHash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	announce := "info_hash=" + ih1 + "&peer_id=" + id1 + "&port=6881&uploaded=1&downloaded=2&left=3&event=started&numwant=50&key=deadbeef&compact=1&ipv4=10.0.0.1&ipv6=2001:db8::1"
	var q AnnounceQuery
	if n := testing.AllocsPerRun(100, func() { _ = ParseAnnounce(announce, &q) }); n != 0 {
		t.Errorf("ParseAnnounce allocated %v times per call, want 0", n)
	}
	scrape := "info_hash=" + ih1 + "&info_hash=" + ih1
	dst := make([]peertable.InfoHash, 0, 8)
	if n := testing.AllocsPerRun(100, func() { dst, _ = ParseScrape(scrape, dst[:0], 8) }); n != 0 {
		t.Errorf("ParseScrape allocated %v times per call, want 0", n)
	}
}
