package main

import (
	"encoding/binary"
	"strconv"
)

// This file is the generator's client side of the HTTP tracker protocol:
// announce (BEP 3, with BEP 23 compact peers and BEP 7 peers6) and scrape
// (BEP 48) requests, and a small bencode decoder that checks the replies.
// Like proto.go it shares no code with the tracker's httpcompat package.

// httpEvents are the announce events as HTTP names them; eventNone is
// sent as no event parameter at all.
var httpEvents = [4]string{
	eventNone:      "",
	eventCompleted: "completed",
	eventStarted:   "started",
	eventStopped:   "stopped",
}

// appendHTTPAnnounce appends a GET /announce request for a to dst, with
// host as its Host header. a.ConnID and a.TxID are not sent; downloaded
// and uploaded are zero, as over UDP.
//
//	GET /announce?info_hash=…&peer_id=…&port=…&uploaded=0&downloaded=0
//	    &left=…&key=…[&event=…][&numwant=…]&compact=1 HTTP/1.1
func appendHTTPAnnounce(dst []byte, host string, a *announce) []byte {
	dst = append(dst, httpAnnounceStart...) // "GET /announce?", or -urldata
	dst = append(dst, "info_hash="...)
	dst = appendQueryEscaped(dst, a.InfoHash[:])
	dst = append(dst, "&peer_id="...)
	dst = appendQueryEscaped(dst, a.PeerID[:])
	dst = append(dst, "&port="...)
	dst = strconv.AppendUint(dst, uint64(a.Port), 10)
	dst = append(dst, "&uploaded=0&downloaded=0&left="...)
	dst = strconv.AppendUint(dst, a.Left, 10)
	dst = append(dst, "&key="...)
	dst = appendHex32(dst, a.Key)
	if ev := httpEvents[a.Event&3]; ev != "" {
		dst = append(dst, "&event="...)
		dst = append(dst, ev...)
	}
	if a.NumWant >= 0 {
		dst = append(dst, "&numwant="...)
		dst = strconv.AppendInt(dst, int64(a.NumWant), 10)
	}
	dst = append(dst, "&compact=1"...)
	return appendRequestEnd(dst, host)
}

// appendHTTPScrape appends a GET /scrape request for hashes to dst.
func appendHTTPScrape(dst []byte, host string, hashes [][20]byte) []byte {
	dst = append(dst, "GET /scrape"...)
	for i := range hashes {
		if i == 0 {
			dst = append(dst, "?info_hash="...)
		} else {
			dst = append(dst, "&info_hash="...)
		}
		dst = appendQueryEscaped(dst, hashes[i][:])
	}
	return appendRequestEnd(dst, host)
}

// appendRequestEnd ends a request line and adds the headers every
// request carries. Keep-alive is HTTP/1.1's default, so it is not asked
// for; no Accept-Encoding, so replies come uncompressed.
func appendRequestEnd(dst []byte, host string) []byte {
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	return append(dst, "\r\nUser-Agent: chihaya-load\r\n\r\n"...)
}

const hexDigits = "0123456789abcdef"

// appendQueryEscaped appends b percent-encoded as a query value: RFC
// 3986's unreserved bytes as they are, every other byte as %XX, as
// BitTorrent clients encode info hashes and peer IDs.
func appendQueryEscaped(dst, b []byte) []byte {
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
		}
	}
	return dst
}

// appendHex32 appends v as 8 hex digits, as clients send their key.
func appendHex32(dst []byte, v uint32) []byte {
	for shift := 28; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[v>>shift&15])
	}
	return dst
}

// maxBencodeDepth bounds how deeply lists and dictionaries may nest in a
// reply; tracker replies need three levels (scrape: d files d hash d).
const maxBencodeDepth = 8

// bInt decodes the integer whose 'i' is at b[i] and returns it with the
// offset after its 'e'. Leading zeros, "-0" and values beyond 18 digits
// are rejected.
func bInt(b []byte, i int) (v int64, next int, ok bool) {
	if i >= len(b) || b[i] != 'i' {
		return 0, 0, false
	}
	i++
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		if i-start == 18 {
			return 0, 0, false
		}
		v = v*10 + int64(b[i]-'0')
	}
	n := i - start
	if n == 0 || i >= len(b) || b[i] != 'e' || b[start] == '0' && (n > 1 || neg) {
		return 0, 0, false
	}
	if neg {
		v = -v
	}
	return v, i + 1, true
}

// bString decodes the string whose length starts at b[i] and returns it
// (a slice of b) with the offset after it.
func bString(b []byte, i int) (s []byte, next int, ok bool) {
	start, n := i, 0
	for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		if i-start == 9 {
			return nil, 0, false
		}
		n = n*10 + int(b[i]-'0')
	}
	if i == start || i >= len(b) || b[i] != ':' || b[start] == '0' && i-start > 1 {
		return nil, 0, false
	}
	i++
	if n > len(b)-i {
		return nil, 0, false
	}
	return b[i : i+n], i + n, true
}

// bSkip returns the offset after the value that starts at b[i], having
// checked it, at most depth levels of lists and dictionaries deep.
func bSkip(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == 'i':
		_, next, ok := bInt(b, i)
		return next, ok
	case '0' <= c && c <= '9':
		_, next, ok := bString(b, i)
		return next, ok
	case c == 'l':
		if depth == 0 {
			return 0, false
		}
		// Each pass consumes at least one byte, so len(b) bounds the loop.
		for i++; i < len(b) && b[i] != 'e'; {
			var ok bool
			if i, ok = bSkip(b, i, depth-1); !ok {
				return 0, false
			}
		}
		if i >= len(b) {
			return 0, false
		}
		return i + 1, true
	case c == 'd':
		if depth == 0 {
			return 0, false
		}
		d := openDict(b, i, depth-1)
		for _, _, ok := d.next(); ok; _, _, ok = d.next() {
		}
		return d.end, !d.bad
	}
	return 0, false
}

// A bDict walks the entries of a bencoded dictionary, checking that its
// keys are strings in strictly ascending order, as bencoding requires.
type bDict struct {
	b     []byte
	i     int // the next key, or the closing 'e'
	depth int // nesting still allowed inside values
	prev  []byte
	n     int  // entries seen
	end   int  // offset after the closing 'e', once next has returned false
	bad   bool // malformed; set when next returns false
}

// openDict starts walking the dictionary whose 'd' is at b[i]. A value
// other than a dictionary makes the first next fail with d.bad set.
func openDict(b []byte, i, depth int) bDict {
	d := bDict{b: b, i: i + 1, depth: depth}
	if i >= len(b) || b[i] != 'd' {
		d.i = len(b)
	}
	return d
}

// next returns the next key and its whole encoded value, both slices of
// the reply, or false at the end of the dictionary (d.end is then set) or
// when it is malformed (d.bad is then set too).
func (d *bDict) next() (key, val []byte, ok bool) {
	if d.i >= len(d.b) {
		d.bad = true
		return nil, nil, false
	}
	if d.b[d.i] == 'e' {
		d.end = d.i + 1
		return nil, nil, false
	}
	key, start, ok := bString(d.b, d.i)
	if !ok || d.n > 0 && string(key) <= string(d.prev) {
		d.bad = true
		return nil, nil, false
	}
	next, ok := bSkip(d.b, start, d.depth)
	if !ok {
		d.bad = true
		return nil, nil, false
	}
	d.prev, d.i = key, next
	d.n++
	return key, d.b[start:next], true
}

// bIntValue decodes v, a whole encoded value, as an integer.
func bIntValue(v []byte) (int64, bool) {
	n, next, ok := bInt(v, 0)
	return n, ok && next == len(v)
}

// bStringValue decodes v, a whole encoded value, as a string.
func bStringValue(v []byte) ([]byte, bool) {
	s, next, ok := bString(v, 0)
	return s, ok && next == len(v)
}

// checkHTTPAnnounce checks an announce reply body against the request's
// family (v6) and numWant (ignored when negative). It returns the text of
// a failure reason, if the tracker refused, or why the reply is invalid:
// it must be one bencoded dictionary with non-negative complete and
// incomplete, a positive interval, and a peer list of the client's
// family, compact (6 or 18 bytes a peer: "peers" for IPv4, "peers6" for
// IPv6, the other one absent or empty) or a list of dictionaries, no
// longer than numWant or than the swarm.
func checkHTTPAnnounce(body []byte, v6 bool, numWant int32) (failure []byte, why bad) {
	var (
		complete, incomplete, interval int64  = -1, -1, -1
		peers, peers6                  []byte // compact lists
		listed                         = -1   // entries of a non-compact list
		havePeers, isFailure           bool
		ok                             = true
	)
	d := openDict(body, 0, maxBencodeDepth)
	for k, v, more := d.next(); more && ok; k, v, more = d.next() {
		switch string(k) {
		case "failure reason":
			failure, ok = bStringValue(v)
			isFailure = true
		case "complete":
			complete, ok = bIntValue(v)
		case "incomplete":
			incomplete, ok = bIntValue(v)
		case "interval":
			interval, ok = bIntValue(v)
		case "peers":
			havePeers = true
			if v[0] == 'l' {
				listed, ok = countList(v)
			} else {
				peers, ok = bStringValue(v)
			}
		case "peers6":
			havePeers = true
			peers6, ok = bStringValue(v)
		}
	}
	if !ok || d.bad || d.end != len(body) {
		return nil, badBencode
	}
	if isFailure {
		return failure, badNone // a slice of body: not nil, even if empty
	}
	if complete < 0 || incomplete < 0 || interval <= 0 || !havePeers {
		return nil, badCounts
	}
	own, other, size := peers, peers6, peerLenIPv4
	if v6 {
		own, other, size = peers6, peers, peerLenIPv6
	}
	if len(own)%size != 0 || len(other) != 0 || v6 && listed >= 0 {
		return nil, badPeerSize
	}
	n := len(own) / size
	if listed >= 0 {
		n = listed
	}
	if int64(n) > complete+incomplete || numWant >= 0 && n > int(numWant) {
		return nil, badCounts
	}
	for p := own; len(p) > 0; p = p[size:] {
		if v6 && isV4Mapped(p) {
			return nil, badPeerSize
		}
		if binary.BigEndian.Uint16(p[size-2:]) == 0 {
			return nil, badCounts
		}
	}
	return nil, badNone
}

// countList returns the number of dictionaries in v, a whole encoded
// list of them (BEP 3's non-compact peers).
func countList(v []byte) (int, bool) {
	n := 0
	i := 1
	for i < len(v) && v[i] == 'd' { // each pass consumes a dictionary
		var ok bool
		if i, ok = bSkip(v, i, 2); !ok {
			return 0, false
		}
		n++
	}
	return n, i == len(v)-1 && v[i] == 'e'
}

// checkHTTPScrape checks a scrape reply body against the info hashes
// asked for. It returns the text of a failure reason, if the tracker
// refused, or why the reply is invalid: it must be one bencoded
// dictionary whose "files" maps info hashes that were asked for, each at
// most once (the keys are sorted), to dictionaries with non-negative
// complete and incomplete (and downloaded, if present). BEP 48 lets a
// tracker leave out torrents it knows nothing about, so fewer files than
// hashes is valid.
func checkHTTPScrape(body []byte, asked [][20]byte) (failure []byte, why bad) {
	var files []byte
	isFailure, ok := false, true
	d := openDict(body, 0, maxBencodeDepth)
	for k, v, more := d.next(); more && ok; k, v, more = d.next() {
		switch string(k) {
		case "failure reason":
			failure, ok = bStringValue(v)
			isFailure = true
		case "files":
			files, ok = v, v[0] == 'd'
		}
	}
	if !ok || d.bad || d.end != len(body) {
		return nil, badBencode
	}
	if isFailure {
		return failure, badNone // a slice of body: not nil, even if empty
	}
	if files == nil {
		return nil, badFiles
	}
	fd := openDict(files, 0, maxBencodeDepth)
	for k, v, more := fd.next(); more; k, v, more = fd.next() {
		if len(k) != 20 || !askedFor(asked, k) {
			return nil, badFiles
		}
		if why := checkScrapeFile(v); why != badNone {
			return nil, why
		}
	}
	return nil, badNone // the outer walk checked files' syntax already
}

// askedFor reports whether h is one of asked.
func askedFor(asked [][20]byte, h []byte) bool {
	for i := range asked {
		if string(asked[i][:]) == string(h) {
			return true
		}
	}
	return false
}

// checkScrapeFile checks one entry of a scrape's files.
func checkScrapeFile(v []byte) bad {
	complete, incomplete, downloaded := int64(-1), int64(-1), int64(0)
	ok := true
	d := openDict(v, 0, maxBencodeDepth)
	for k, v, more := d.next(); more && ok; k, v, more = d.next() {
		switch string(k) {
		case "complete":
			complete, ok = bIntValue(v)
		case "incomplete":
			incomplete, ok = bIntValue(v)
		case "downloaded":
			downloaded, ok = bIntValue(v)
		}
	}
	switch {
	case !ok || d.bad:
		return badBencode
	case complete < 0 || incomplete < 0 || downloaded < 0:
		return badCounts
	}
	return badNone
}
