package fuzz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/udp"
)

// BEP 15 and BEP 41 as the reference decoders below read them, written
// independently of package udp's constants.
const (
	announceBody = 98
	scrapeHeader = 16
)

// wantParseError fails unless err is a *udp.ParseError: only those may
// be sent to clients as they are.
func wantParseError(t *testing.T, err error) {
	t.Helper()
	var pe *udp.ParseError
	if !errors.As(err, &pe) || pe.Error() == "" {
		t.Fatalf("error %v (%T) is not a *udp.ParseError with a text", err, err)
	}
}

func FuzzParseConnect(f *testing.F) {
	f.Add(udp.AppendConnect(nil, udp.ConnectRequest{TxID: 0x01020304}))
	f.Add(append(udp.AppendConnect(nil, udp.ConnectRequest{}), 0xff, 0xee))
	f.Add([]byte{})
	f.Add(make([]byte, 15))
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := udp.ParseConnect(b)
		// Reference: the magic, action 0, and the transaction ID.
		ok := len(b) >= 16 && binary.BigEndian.Uint64(b) == 0x41727101980 && binary.BigEndian.Uint32(b[8:]) == 0
		if ok != (err == nil) {
			t.Fatalf("ParseConnect(%x) error = %v, reference says ok = %v", b, err, ok)
		}
		if err != nil {
			wantParseError(t, err)
			return
		}
		if r.TxID != binary.BigEndian.Uint32(b[12:]) {
			t.Errorf("ParseConnect(%x).TxID = %#x", b, r.TxID)
		}
		enc := udp.AppendConnect(nil, r)
		if !bytes.Equal(enc, b[:16]) {
			t.Errorf("AppendConnect(ParseConnect(%x)) = %x, want the first 16 bytes", b, enc)
		}
	})
}

// refURLData decodes the BEP 41 options after an announce body the slow
// way: a copy of the rest of the packet is consumed from the front. It
// reports the URL data and whether there was more than limit of it.
func refURLData(opts []byte, limit int) (data []byte, tooLong bool) {
	rest := bytes.Clone(opts)
	for len(rest) > 0 {
		typ := rest[0]
		rest = rest[1:]
		if typ == 0 {
			break
		}
		if typ == 1 {
			continue
		}
		if len(rest) == 0 || int(rest[0]) > len(rest)-1 {
			break // cut short: ignored
		}
		n := int(rest[0])
		if typ == 2 {
			data = append(data, rest[1:1+n]...)
			if len(data) > limit {
				return nil, true
			}
		}
		rest = rest[1+n:]
	}
	return data, false
}

func announceSeeds() [][]byte {
	r := udp.AnnounceRequest{
		ConnID: 0x1122334455667788, TxID: 9, InfoHash: peertable.InfoHash{1, 2, 3},
		PeerID: [20]byte{'-', 'q', 'B'}, Left: 10, Event: peertable.EventStarted,
		NumWant: -1, Port: 6881,
	}
	plain := udp.AppendAnnounce(nil, &r)
	r.URLData = []byte("/announce/0123456789abcdef0123456789abcdef?x=y")
	withURL := udp.AppendAnnounce(nil, &r)
	r.URLData = bytes.Repeat([]byte("p"), 600) // three options
	long := udp.AppendAnnounce(nil, &r)
	with := func(opts ...byte) []byte { return append(bytes.Clone(plain), opts...) }
	tooLong := bytes.Clone(plain)
	for range 5 {
		tooLong = append(append(tooLong, 2, 255), bytes.Repeat([]byte{'z'}, 255)...)
	}
	return [][]byte{
		plain, withURL, long, tooLong,
		with(0, 0),                        // the old extensions field
		with(0, 2, 5, 'x'),                // end of options, then junk
		with(1, 1, 2, 1, '/', 1, 0),       // nops around URL data
		with(2, 3, '/', 'a'),              // URL data cut short
		with(2),                           // type without a length
		with(0x7f, 3, 1, 2, 3, 2, 1, 'q'), // unknown option skipped
		with(0x80, 0xff),                  // unknown option cut short
		plain[:97],                        // short
	}
}

func FuzzParseAnnounce(f *testing.F) {
	for _, s := range announceSeeds() {
		f.Add(s)
	}
	// One request reused across inputs, as a worker reuses its own: its
	// URL data must never outgrow the preallocated storage.
	reused := udp.AnnounceRequest{URLData: make([]byte, 0, udp.MaxURLData)}
	storage := reused.URLData[:1]
	f.Fuzz(func(t *testing.T, b []byte) {
		var r udp.AnnounceRequest
		err := udp.ParseAnnounce(b, &r)

		valid := len(b) >= announceBody && binary.BigEndian.Uint32(b[8:]) == 1 && binary.BigEndian.Uint32(b[80:]) <= 3
		var refData []byte
		var tooLong bool
		if valid {
			refData, tooLong = refURLData(b[announceBody:], udp.MaxURLData)
		}
		if want := valid && !tooLong; (err == nil) != want {
			t.Fatalf("ParseAnnounce(%x) error = %v, reference says ok = %v", b, err, want)
		}
		if err2 := udp.ParseAnnounce(b, &reused); (err2 == nil) != (err == nil) {
			t.Fatalf("ParseAnnounce(%x) into a reused request: error %v, fresh: %v", b, err2, err)
		}
		if cap(reused.URLData) != udp.MaxURLData || &reused.URLData[:1][0] != &storage[0] {
			t.Fatalf("ParseAnnounce(%x) replaced the reused URL data storage", b)
		}
		if err != nil {
			wantParseError(t, err)
			return
		}
		if !bytes.Equal(r.URLData, refData) {
			t.Fatalf("ParseAnnounce(%x).URLData = %q, reference %q", b, r.URLData, refData)
		}

		enc := udp.AppendAnnounce(nil, &r)
		if !bytes.Equal(enc[:announceBody], b[:announceBody]) {
			t.Fatalf("AppendAnnounce(ParseAnnounce(%x)) body = %x, want the input's", b, enc[:announceBody])
		}
		var r2 udp.AnnounceRequest
		if err := udp.ParseAnnounce(enc, &r2); err != nil {
			t.Fatalf("ParseAnnounce(AppendAnnounce(%+v)) = %v", r, err)
		}
		if !bytes.Equal(r.URLData, r2.URLData) {
			t.Fatalf("round trip URL data %q, want %q", r2.URLData, r.URLData)
		}
		r.URLData, r2.URLData = nil, nil
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip %+v, want %+v", r2, r)
		}
	})
}

func FuzzParseScrape(f *testing.F) {
	hashes := func(n int) []peertable.InfoHash {
		h := make([]peertable.InfoHash, n)
		for i := range h {
			h[i][0], h[i][19] = byte(i), 0xee
		}
		return h
	}
	for _, n := range []int{1, 2, udp.MaxScrapeInfoHashes} {
		f.Add(udp.AppendScrape(nil, &udp.ScrapeRequest{ConnID: 7, TxID: 8, InfoHashes: hashes(n)}))
	}
	f.Add(udp.AppendScrape(nil, &udp.ScrapeRequest{ConnID: 7, TxID: 8, InfoHashes: hashes(udp.MaxScrapeInfoHashes + 1)}))
	f.Add(append(udp.AppendScrape(nil, &udp.ScrapeRequest{InfoHashes: hashes(1)}), 1, 2, 3))
	f.Add(udp.AppendScrape(nil, &udp.ScrapeRequest{}))

	reused := udp.ScrapeRequest{InfoHashes: make([]peertable.InfoHash, 0, udp.MaxScrapeInfoHashes)}
	storage := reused.InfoHashes[:1]
	f.Fuzz(func(t *testing.T, b []byte) {
		var r udp.ScrapeRequest
		err := udp.ParseScrape(b, &r)

		n := 0
		if len(b) >= scrapeHeader {
			n = (len(b) - scrapeHeader) / 20
		}
		want := n >= 1 && n <= udp.MaxScrapeInfoHashes && binary.BigEndian.Uint32(b[8:]) == 2
		if (err == nil) != want {
			t.Fatalf("ParseScrape(%x) error = %v, reference says ok = %v", b, err, want)
		}
		if err2 := udp.ParseScrape(b, &reused); (err2 == nil) != (err == nil) {
			t.Fatalf("ParseScrape(%x) into a reused request: error %v, fresh: %v", b, err2, err)
		}
		if cap(reused.InfoHashes) != udp.MaxScrapeInfoHashes || &reused.InfoHashes[:1][0] != &storage[0] {
			t.Fatalf("ParseScrape(%x) replaced the reused info hash storage", b)
		}
		if err != nil {
			wantParseError(t, err)
			return
		}
		if len(r.InfoHashes) != n {
			t.Fatalf("ParseScrape(%x) gave %d info hashes, want %d", b, len(r.InfoHashes), n)
		}
		for i, ih := range r.InfoHashes {
			if off := scrapeHeader + 20*i; !bytes.Equal(ih[:], b[off:off+20]) {
				t.Fatalf("ParseScrape(%x) info hash %d = %x", b, i, ih)
			}
		}
		enc := udp.AppendScrape(nil, &r)
		if !bytes.Equal(enc, b[:scrapeHeader+20*n]) {
			t.Fatalf("AppendScrape(ParseScrape(%x)) = %x, want the input without trailing bytes", b, enc)
		}
	})
}
