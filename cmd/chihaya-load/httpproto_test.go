package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestAppendHTTPAnnounce(t *testing.T) {
	a := &announce{Left: 1 << 30, Event: eventStarted, Key: 0xab, NumWant: 50, Port: 6881}
	for i := range a.InfoHash {
		a.InfoHash[i] = byte(i * 13)
	}
	copy(a.PeerID[:], "-CL0001-aaaaaaaaaaaa")
	got := string(appendHTTPAnnounce(nil, "127.0.0.1:6969", a))
	want := "GET /announce?info_hash=%00%0d%1a%274AN%5bhu%82%8f%9c%a9%b6%c3%d0%dd%ea%f7" +
		"&peer_id=-CL0001-aaaaaaaaaaaa&port=6881&uploaded=0&downloaded=0&left=1073741824" +
		"&key=000000ab&event=started&numwant=50&compact=1 HTTP/1.1\r\n" +
		"Host: 127.0.0.1:6969\r\nUser-Agent: chihaya-load\r\n\r\n"
	if got != want {
		t.Errorf("appendHTTPAnnounce =\n%q\nwant\n%q", got, want)
	}
	a.Event, a.NumWant = eventNone, -1
	got = string(appendHTTPAnnounce(nil, "[::1]:80", a))
	if strings.Contains(got, "event=") || strings.Contains(got, "numwant=") || !strings.Contains(got, "\r\nHost: [::1]:80\r\n") {
		t.Errorf("announce without event and numwant = %q", got)
	}
}

func TestAppendHTTPScrape(t *testing.T) {
	h1, h2 := [20]byte{'a', 0xff}, [20]byte{'~'}
	got := string(appendHTTPScrape(nil, "h", [][20]byte{h1, h2}))
	z := strings.Repeat("%00", 18)
	want := "GET /scrape?info_hash=a%ff" + z + "&info_hash=~%00" + z + " HTTP/1.1\r\nHost: h\r\nUser-Agent: chihaya-load\r\n\r\n"
	if got != want {
		t.Errorf("appendHTTPScrape =\n%q\nwant\n%q", got, want)
	}
}

func TestBencodeScalars(t *testing.T) {
	for _, c := range []struct {
		in   string
		v    int64
		next int
		ok   bool
	}{
		{"i0e", 0, 3, true},
		{"i42e", 42, 4, true},
		{"i-7ex", -7, 4, true},
		{"i999999999999999999e", 999999999999999999, 20, true},
		{"i1000000000000000000e", 0, 0, false}, // 19 digits
		{"i-0e", 0, 0, false},
		{"i01e", 0, 0, false},
		{"ie", 0, 0, false},
		{"i-e", 0, 0, false},
		{"i12", 0, 0, false},
		{"3:abc", 0, 0, false},
	} {
		v, next, ok := bInt([]byte(c.in), 0)
		if v != c.v || next != c.next || ok != c.ok {
			t.Errorf("bInt(%q) = %d, %d, %v; want %d, %d, %v", c.in, v, next, ok, c.v, c.next, c.ok)
		}
	}
	for _, c := range []struct {
		in, s string
		ok    bool
	}{
		{"0:", "", true},
		{"3:abcd", "abc", true},
		{"10:0123456789", "0123456789", true},
		{"4:abc", "", false},
		{"03:abc", "", false},
		{"3abc", "", false},
		{":", "", false},
		{"1000000000:x", "", false},
	} {
		s, _, ok := bString([]byte(c.in), 0)
		if string(s) != c.s || ok != c.ok {
			t.Errorf("bString(%q) = %q, %v; want %q, %v", c.in, s, ok, c.s, c.ok)
		}
	}
}

func TestBencodeSkip(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"le", true},
		{"de", true},
		{"li1e3:abcd1:ai2eee", true},
		{"d1:ai1e1:bi2ee", true},
		{"d1:bi1e1:ai2ee", false}, // keys out of order
		{"d1:ai1e1:ai2ee", false}, // duplicate key
		{"di1ei2ee", false},       // key not a string
		{"d1:ae", false},          // key without value
		{"li1e", false},
		{"x", false},
		{strings.Repeat("l", maxBencodeDepth) + strings.Repeat("e", maxBencodeDepth), true},
		{strings.Repeat("l", maxBencodeDepth+1) + strings.Repeat("e", maxBencodeDepth+1), false},
	} {
		next, ok := bSkip([]byte(c.in), 0, maxBencodeDepth)
		if ok != c.ok || ok && next != len(c.in) {
			t.Errorf("bSkip(%q) = %d, %v; want %d, %v", c.in, next, ok, len(c.in), c.ok)
		}
	}
}

// bstr bencodes s.
func bstr(s string) string { return fmt.Sprintf("%d:%s", len(s), s) }

func TestCheckHTTPAnnounce(t *testing.T) {
	v4peer := "\x7f\x00\x00\x01\x1a\xe1"
	v6peer := "\x20\x01\x0d\xb8" + strings.Repeat("\x00", 11) + "\x01\x1a\xe1"
	mapped := strings.Repeat("\x00", 10) + "\xff\xff\x7f\x00\x00\x01\x1a\xe1"
	head := "d8:completei2e10:incompletei1e8:intervali1800e"
	for _, c := range []struct {
		name    string
		body    string
		v6      bool
		numWant int32
		failure string
		why     bad
	}{
		{"v4", head + "5:peers" + bstr(v4peer+v4peer) + "e", false, 50, "", badNone},
		{"v4 empty", head + "5:peers0:e", false, 50, "", badNone},
		{"chihaya v4", "d8:completei1e10:downloadedi0e11:external ip4:\x7f\x00\x00\x01" +
			"10:incompletei0e8:intervali1800e12:min intervali900e5:peers0:e", false, 50, "", badNone},
		{"v6", head + "5:peers0:6:peers6" + bstr(v6peer) + "e", true, 50, "", badNone},
		{"v6 without peers", head + "6:peers6" + bstr(v6peer) + "e", true, 50, "", badNone},
		{"dict peers", head + "5:peersld2:ip9:127.0.0.14:porti1eeee", false, 50, "", badNone},
		{"numwant -1", head + "5:peers" + bstr(v4peer+v4peer) + "e", false, -1, "", badNone},
		{"failure", "d14:failure reason" + bstr("go away") + "e", false, 50, "go away", badNone},
		{"empty failure", "d14:failure reason0:e", false, 50, "", badNone},
		{"not a dict", "le", false, 50, "", badBencode},
		{"trailing bytes", head + "5:peers0:ex", false, 50, "", badBencode},
		{"unsorted", "d8:intervali1800e8:completei2e10:incompletei1e5:peers0:e", false, 50, "", badBencode},
		{"count not int", "d8:complete1:2e", false, 50, "", badBencode},
		{"truncated", head + "5:peers6:\x7f", false, 50, "", badBencode},
		{"no interval", "d8:completei2e10:incompletei1e5:peers0:e", false, 50, "", badCounts},
		{"zero interval", "d8:completei2e10:incompletei1e8:intervali0e5:peers0:e", false, 50, "", badCounts},
		{"negative", "d8:completei-1e10:incompletei1e8:intervali1e5:peers0:e", false, 50, "", badCounts},
		{"no peers", head + "e", false, 50, "", badCounts},
		{"too many", head + "5:peers" + bstr(v4peer+v4peer) + "e", false, 1, "", badCounts},
		{"more than swarm", head + "5:peers" + bstr(strings.Repeat(v4peer, 4)) + "e", false, 50, "", badCounts},
		{"port 0", head + "5:peers" + bstr("\x7f\x00\x00\x01\x00\x00") + "e", false, 50, "", badCounts},
		{"v4 size", head + "5:peers" + bstr(v4peer[:5]) + "e", false, 50, "", badPeerSize},
		{"v6 to v4", head + "5:peers0:6:peers6" + bstr(v6peer) + "e", false, 50, "", badPeerSize},
		{"v4 to v6", head + "5:peers" + bstr(v4peer) + "e", true, 50, "", badPeerSize},
		{"mapped", head + "6:peers6" + bstr(mapped) + "e", true, 50, "", badPeerSize},
	} {
		failure, why := checkHTTPAnnounce([]byte(c.body), c.v6, c.numWant)
		if string(failure) != c.failure || why != c.why || (c.name == "empty failure") != (failure != nil && len(failure) == 0) {
			t.Errorf("%s: checkHTTPAnnounce(%q) = %q, %s; want %q, %s", c.name, c.body, failure, badNames[why], c.failure, badNames[c.why])
		}
	}
}

func TestCheckHTTPScrape(t *testing.T) {
	h1, h2 := [20]byte{1}, [20]byte{2}
	file := "d8:completei1e10:downloadedi0e10:incompletei2ee"
	for _, c := range []struct {
		name    string
		body    string
		asked   [][20]byte
		failure string
		why     bad
	}{
		{"two", "d5:filesd" + bstr(string(h1[:])) + file + bstr(string(h2[:])) + file + "ee", [][20]byte{h2, h1}, "", badNone},
		{"left out", "d5:filesd" + bstr(string(h2[:])) + file + "ee", [][20]byte{h1, h2}, "", badNone},
		{"none", "d5:filesdee", [][20]byte{h1}, "", badNone},
		{"failure", "d14:failure reason3:no!e", [][20]byte{h1}, "no!", badNone},
		{"no files", "de", [][20]byte{h1}, "", badFiles},
		{"not asked", "d5:filesd" + bstr(string(h2[:])) + file + "ee", [][20]byte{h1}, "", badFiles},
		{"short key", "d5:filesd3:abc" + file + "ee", [][20]byte{h1}, "", badFiles},
		{"twice", "d5:filesd" + bstr(string(h1[:])) + file + bstr(string(h1[:])) + file + "ee", [][20]byte{h1}, "", badBencode},
		{"negative", "d5:filesd" + bstr(string(h1[:])) + "d8:completei-1e10:incompletei2eeee", [][20]byte{h1}, "", badCounts},
		{"missing", "d5:filesd" + bstr(string(h1[:])) + "d8:completei1eeee", [][20]byte{h1}, "", badCounts},
		{"file not dict", "d5:filesd" + bstr(string(h1[:])) + "i1eee", [][20]byte{h1}, "", badBencode},
		{"files not dict", "d5:filesle" + "e", [][20]byte{h1}, "", badBencode},
	} {
		failure, why := checkHTTPScrape([]byte(c.body), c.asked)
		if string(failure) != c.failure || why != c.why {
			t.Errorf("%s: checkHTTPScrape(%q) = %q, %s; want %q, %s", c.name, c.body, failure, badNames[why], c.failure, badNames[c.why])
		}
	}
}

func TestParseReply(t *testing.T) {
	const limit = 256
	for _, c := range []struct {
		name  string
		in    string
		eof   bool
		body  string
		n     int // consumed; 0 means all of in
		close bool
		err   error
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false, "abc", 0, false, nil},
		{"length, more after", "HTTP/1.1 200 OK\r\ncontent-length:3\r\n\r\nabcHTTP", false, "abc", 40, false, nil},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, "", 0, false, nil},
		{"close", "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\nx", false, "x", 0, true, nil},
		{"1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false, "x", 0, true, nil},
		{"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: foo, keep-alive\r\nContent-Length: 1\r\n\r\nx", false, "x", 0, false, nil},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA \r\n0123456789\r\n0\r\nT: v\r\n\r\n", false, "abc0123456789", 0, false, nil},
		{"until eof", "HTTP/1.1 200 OK\r\n\r\nabc", true, "abc", 0, true, nil},
		{"until eof, open", "HTTP/1.1 200 OK\r\n\r\nabc", false, "", 0, false, errNeedMore},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, "", 0, false, nil},
		{"head part", "HTTP/1.1 200 OK\r\nContent-Le", false, "", 0, false, errNeedMore},
		{"body part", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabc", false, "", 0, false, errNeedMore},
		{"chunk part", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", false, "", 0, false, errNeedMore},
		{"trailer part", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", false, "", 0, false, errNeedMore},
		{"too long", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false, "", 0, false, errReplyTooLong},
		{"chunk too long", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n", false, "", 0, false, errReplyTooLong},
		{"both", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n", false, "", 0, false, errBadHTTP},
		{"chunk without crlf", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", false, "", 0, false, errBadHTTP},
		{"bad header", "HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"space in name", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"http/2", "HTTP/2 200 OK\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"100", "HTTP/1.1 100 Continue\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"status", "HTTP/1.1 2x0 OK\r\n\r\n", false, "", 0, false, errBadHTTP},
		{"header too long", "HTTP/1.1 200 OK\r\n" + strings.Repeat("x", maxHeaderLen), false, "", 0, false, errBadHTTP},
	} {
		var chunks []byte
		rep, n, err := parseReply([]byte(c.in), c.eof, limit, &chunks)
		want := c.n
		if want == 0 && c.err == nil {
			want = len(c.in)
		}
		if err != c.err || err == nil && (string(rep.body) != c.body || n != want || rep.close != c.close) {
			t.Errorf("%s: parseReply(%q) = body %q, n %d, close %v, err %v; want %q, %d, %v, %v",
				c.name, c.in, rep.body, n, rep.close, err, c.body, want, c.close, c.err)
		}
	}
}

// pieces is a reader that returns its chunks one per Read, then EOF.
type pieces []string

func (p *pieces) Read(b []byte) (int, error) {
	if len(*p) == 0 {
		return 0, io.EOF
	}
	n := copy(b, (*p)[0])
	if n < len((*p)[0]) {
		(*p)[0] = (*p)[0][n:]
	} else {
		*p = (*p)[1:]
	}
	return n, nil
}

func TestReplyReader(t *testing.T) {
	one := "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
	// Two replies split at every awkward place, then the end.
	all := one + chunked
	for split := 1; split < len(all); split++ {
		p := pieces{all[:split], all[split:]}
		rr := newReplyReader()
		for i, want := range []string{"abc", "def"} {
			rep, err := rr.read(&p)
			if err != nil || string(rep.body) != want {
				t.Fatalf("split %d: reply %d = %q, %v; want %q", split, i, rep.body, err, want)
			}
		}
		if _, err := rr.read(&p); err != errIdleClosed {
			t.Fatalf("split %d: read after the replies = %v, want errIdleClosed", split, err)
		}
	}
	p := pieces{one[:20]}
	if _, err := newReplyReader().read(&p); err != errShortReply {
		t.Errorf("read of a cut-off reply = %v, want errShortReply", err)
	}
	p = pieces{"HTTP/1.1 200 OK\r\n\r\n", "until", " the end"}
	rep, err := newReplyReader().read(&p)
	if err != nil || string(rep.body) != "until the end" || !rep.close {
		t.Errorf("read of a reply ended by EOF = %q, close %v, %v", rep.body, rep.close, err)
	}
	huge := pieces{"HTTP/1.1 200 OK\r\n\r\n", strings.Repeat("x", replyBufLen)}
	if _, err := newReplyReader().read(&huge); err != errReplyTooLong {
		t.Errorf("read of a reply longer than the buffer = %v, want errReplyTooLong", err)
	}
}

func TestReplyPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	body := "d8:completei2e10:incompletei1e8:intervali1800e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x01\x1a\xe2e"
	in := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body))
	rr := newReplyReader()
	a := &announce{NumWant: 50}
	req := make([]byte, 0, 512)
	r := bytes.NewReader(in)
	n := testing.AllocsPerRun(100, func() {
		req = appendHTTPAnnounce(req[:0], "127.0.0.1:6969", a)
		r.Reset(in)
		rep, err := rr.read(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, why := checkHTTPAnnounce(rep.body, false, a.NumWant); why != badNone {
			t.Fatalf("check: %s", badNames[why])
		}
	})
	if n != 0 {
		t.Errorf("building a request and reading its reply allocated %v times, want 0", n)
	}
}
