package udp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/chihaya/chihaya/peertable"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, a hex dump whose '#' lines are
// comments, or rewrites the file under -update.
func golden(t *testing.T, name, comment string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		var sb strings.Builder
		for line := range strings.SplitSeq(comment, "\n") {
			fmt.Fprintf(&sb, "# %s\n", line)
		}
		for b := got; len(b) > 0; {
			n := min(len(b), 16)
			fmt.Fprintf(&sb, "%x\n", b[:n])
			b = b[n:]
		}
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want := readHex(t, path)
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got\n%x\nwant\n%x\n(run go test -update to accept)", name, got, want)
	}
}

func readHex(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for line := range strings.SplitSeq(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			sb.WriteString(strings.TrimSpace(line))
		}
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func testAnnounce() AnnounceRequest {
	return AnnounceRequest{
		ConnID:     0x0102030405060708,
		TxID:       0x0a0b0c0d,
		InfoHash:   peertable.InfoHash(seq(20, 0x10)),
		PeerID:     [20]byte(seq(20, 0x30)),
		Downloaded: 100,
		Left:       200,
		Uploaded:   300,
		Event:      peertable.EventStarted,
		IP:         [4]byte{192, 0, 2, 7},
		Key:        0xdeadbeef,
		NumWant:    -1,
		Port:       6881,
	}
}

// announceBytes is an announce request with opts appended raw.
func announceBytes(opts ...byte) []byte {
	r := testAnnounce()
	return append(AppendAnnounce(nil, &r), opts...)
}

func TestParseConnect(t *testing.T) {
	good := AppendConnect(nil, ConnectRequest{TxID: 0x01020304})
	tests := []struct {
		name string
		in   []byte
		want ConnectRequest
		err  error
	}{
		{"ok", good, ConnectRequest{TxID: 0x01020304}, nil},
		{"trailing bytes", append(bytes.Clone(good), 1, 2, 3), ConnectRequest{TxID: 0x01020304}, nil},
		{"short", good[:15], ConnectRequest{}, errShortRequest},
		{"empty", nil, ConnectRequest{}, errShortRequest},
		{"wrong protocol ID", append([]byte{0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x81}, good[8:]...), ConnectRequest{}, errConnectProtocol},
		{"wrong action", append(bytes.Clone(good[:8]), 0, 0, 0, 1, 1, 2, 3, 4), ConnectRequest{}, errConnectAction},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConnect(tc.in)
			if got != tc.want || err != tc.err {
				t.Errorf("ParseConnect(%x) = %v, %v, want %v, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
	golden(t, "connect_request.hex", "AppendConnect(ConnectRequest{TxID: 0x01020304})", good)
}

func TestParseAnnounce(t *testing.T) {
	long := seq(300, 0) // split over two options by AppendAnnounce
	withLong := testAnnounce()
	withLong.URLData = long
	withURL := func(u []byte) AnnounceRequest {
		r := testAnnounce()
		r.URLData = u
		return r
	}
	tooLong := announceBytes()
	for range 5 {
		tooLong = append(tooLong, optURLData, 255)
		tooLong = append(tooLong, seq(255, 0)...)
	}
	tests := []struct {
		name string
		in   []byte
		want AnnounceRequest
		err  error
	}{
		{"no options", announceBytes(), testAnnounce(), nil},
		{"end of options, then anything", announceBytes(optEnd, 2, 200, 'x'), testAnnounce(), nil},
		{"old extensions field", announceBytes(0, 0), testAnnounce(), nil},
		{"nops", announceBytes(optNOP, optNOP, optNOP), testAnnounce(), nil},
		{"url data", announceBytes(optURLData, 4, '/', 'a', 'b', 'c'), withURL([]byte("/abc")), nil},
		{"url data concatenated", announceBytes(optURLData, 2, '/', 'a', optNOP, optURLData, 2, 'b', 'c', optEnd), withURL([]byte("/abc")), nil},
		{"empty url data option", announceBytes(optURLData, 0), testAnnounce(), nil},
		{"unknown option skipped", announceBytes(0x7f, 2, 'x', 'y', optURLData, 1, '/'), withURL([]byte("/")), nil},
		{"long url data", AppendAnnounce(nil, &withLong), withLong, nil},
		{"type without length", announceBytes(optURLData, 1, '/', optURLData), withURL([]byte("/")), nil},
		{"option cut short", announceBytes(optURLData, 1, '/', optURLData, 10, 'a', 'b'), withURL([]byte("/")), nil},
		{"unknown option cut short", announceBytes(0x40, 255), testAnnounce(), nil},
		{"url data too long", tooLong, AnnounceRequest{}, errURLDataTooLong},
		{"short", announceBytes()[:97], AnnounceRequest{}, errShortAnnounce},
		{"connect", AppendConnect(nil, ConnectRequest{}), AnnounceRequest{}, errShortAnnounce},
	}
	for ev := range 6 {
		b := announceBytes()
		b[83] = byte(ev)
		want, err := testAnnounce(), error(nil)
		want.Event = peertable.Event(ev)
		if ev > 3 {
			want, err = AnnounceRequest{}, errAnnounceEvent
		}
		tests = append(tests, struct {
			name string
			in   []byte
			want AnnounceRequest
			err  error
		}{fmt.Sprintf("event %d", ev), b, want, err})
	}
	wrongAction := announceBytes()
	wrongAction[11] = actionScrape
	tests = append(tests, struct {
		name string
		in   []byte
		want AnnounceRequest
		err  error
	}{"wrong action", wrongAction, AnnounceRequest{}, errAnnounceAction})

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got AnnounceRequest
			err := ParseAnnounce(tc.in, &got)
			if err != tc.err {
				t.Fatalf("ParseAnnounce(%x) error = %v, want %v", tc.in, err, tc.err)
			}
			if err != nil {
				return
			}
			if !bytes.Equal(got.URLData, tc.want.URLData) {
				t.Errorf("ParseAnnounce(%x).URLData = %q, want %q", tc.in, got.URLData, tc.want.URLData)
			}
			got.URLData, tc.want.URLData = nil, nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseAnnounce(%x) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
	golden(t, "announce_request.hex", "AppendAnnounce of testAnnounce() with 300 bytes of URL data", AppendAnnounce(nil, &withLong))
}

func TestParseAnnounceReusesURLData(t *testing.T) {
	r := AnnounceRequest{URLData: make([]byte, 0, MaxURLData)}
	buf := r.URLData[:1]
	if err := ParseAnnounce(announceBytes(optURLData, 3, 'a', 'b', 'c'), &r); err != nil {
		t.Fatal(err)
	}
	if &r.URLData[0] != &buf[0] {
		t.Error("ParseAnnounce did not reuse URLData's storage")
	}
	if err := ParseAnnounce(announceBytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.URLData) != 0 {
		t.Errorf("URLData = %q after an announce without options, want empty", r.URLData)
	}
}

func TestParseScrape(t *testing.T) {
	hashes := func(n int) []peertable.InfoHash {
		h := make([]peertable.InfoHash, n)
		for i := range h {
			h[i] = peertable.InfoHash(seq(20, byte(i)))
		}
		return h
	}
	enc := func(n int) []byte {
		return AppendScrape(nil, &ScrapeRequest{ConnID: 42, TxID: 7, InfoHashes: hashes(n)})
	}
	tests := []struct {
		name string
		in   []byte
		n    int
		err  error
	}{
		{"one", enc(1), 1, nil},
		{"two", enc(2), 2, nil},
		{"most", enc(MaxScrapeInfoHashes), MaxScrapeInfoHashes, nil},
		{"trailing partial hash", append(enc(2), 1, 2, 3), 2, nil},
		{"too many", enc(MaxScrapeInfoHashes + 1), 0, errScrapeTooMany},
		{"none", enc(0), 0, errShortScrape},
		{"partial hash only", enc(1)[:35], 0, errShortScrape},
		{"wrong action", append(AppendConnect(nil, ConnectRequest{}), enc(1)[16:]...), 0, errScrapeAction},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got ScrapeRequest
			err := ParseScrape(tc.in, &got)
			if err != tc.err {
				t.Fatalf("ParseScrape(%x) error = %v, want %v", tc.in, err, tc.err)
			}
			if err != nil {
				return
			}
			want := ScrapeRequest{ConnID: 42, TxID: 7, InfoHashes: hashes(tc.n)}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ParseScrape(%x) = %+v, want %+v", tc.in, got, want)
			}
		})
	}
	golden(t, "scrape_request.hex", "AppendScrape(ConnID 42, TxID 7, info hashes 00..13 and 01..14)", enc(2))
}

func TestParseErrorText(t *testing.T) {
	var pe *ParseError
	if !errors.As(error(errURLDataTooLong), &pe) || pe.Request != "announce" {
		t.Fatalf("errURLDataTooLong is not an announce *ParseError")
	}
	if got, want := errURLDataTooLong.Error(), "announce: BEP 41 URL data longer than 1024 bytes"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := (&ParseError{Request: "scrape", Reason: "odd"}).Error(), "scrape: odd"; got != want {
		t.Errorf("Error() of a literal = %q, want %q", got, want)
	}
	// The numbers in the texts follow the constants.
	for _, tc := range []struct {
		err  *ParseError
		want string
	}{
		{errURLDataTooLong, fmt.Sprint(MaxURLData)},
		{errScrapeTooMany, fmt.Sprint(MaxScrapeInfoHashes)},
		{errRequestTooLarge, fmt.Sprint(maxRequestLen)},
		{errShortAnnounce, fmt.Sprint(announceLen)},
	} {
		if !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%q does not mention %s", tc.err.Error(), tc.want)
		}
	}
}

func TestAppendErrorReplyFits(t *testing.T) {
	buf := make([]byte, 0, 12)
	got := appendErrorReply(buf, 1, "a rather long message")
	if len(got) != 12 || &got[0] != &buf[:1][0] {
		t.Errorf("appendErrorReply outgrew its buffer: %q (len %d)", got, len(got))
	}
}
