package main

import (
	"bytes"
	"errors"
	"io"
)

// This file reads HTTP/1.1 replies: just enough of RFC 9112 for a
// tracker's replies (a status line, headers, and a body framed by
// Content-Length, by chunks, or by the end of the connection), with no
// allocation once its buffers exist. net/http's client would cost the
// generator more per request than the tracker spends answering it.

const (
	// replyBufLen bounds a reply: status line, headers and body. The
	// largest honest tracker reply, 200 IPv6 peers or a scrape of 74
	// hashes, is under 6 KB; a longer one counts as "truncated".
	replyBufLen = 64 << 10
	// maxHeaderLen bounds the status line and headers together.
	maxHeaderLen = 8 << 10
	// maxChunkLine bounds a chunk-size line, extensions included.
	maxChunkLine = 1024
)

var (
	// errIdleClosed: the connection ended before any byte of a reply,
	// as a server's close of a kept-alive connection looks.
	errIdleClosed = errors.New("connection closed before a reply")
	// errShortReply: the connection ended within a reply.
	errShortReply = errors.New("connection closed within a reply")
	// errBadHTTP: the status line, a header or a chunk is malformed.
	errBadHTTP = errors.New("malformed HTTP reply")
	// errReplyTooLong: the reply does not fit replyBufLen.
	errReplyTooLong = errors.New("HTTP reply longer than the buffer")
	// errNeedMore is internal to the parser: read more and try again.
	errNeedMore = errors.New("incomplete HTTP reply")
)

// An httpReply is one reply. Its body is valid until the next read.
type httpReply struct {
	status int
	body   []byte
	close  bool // the server will close (or has closed) the connection
}

// A replyReader reads the replies of one connection at a time into a
// fixed buffer. It is owned by one goroutine.
type replyReader struct {
	buf  []byte // buf[r:w] is read but not yet consumed
	r, w int
	body []byte // a chunked reply's body, joined
}

func newReplyReader() *replyReader {
	return &replyReader{buf: make([]byte, replyBufLen)}
}

// reset forgets what was read, for the next connection.
func (rr *replyReader) reset() { rr.r, rr.w = 0, 0 }

// buffered returns how many bytes were read beyond the last reply.
func (rr *replyReader) buffered() int { return rr.w - rr.r }

// read returns the next reply from c, reading as much as it needs; c's
// deadline bounds the wait. It returns errIdleClosed if c ends before any
// byte of the reply, errShortReply if within it, errBadHTTP or
// errReplyTooLong for a reply it cannot use (the connection is then out
// of step and must be closed), or c's error.
func (rr *replyReader) read(c io.Reader) (httpReply, error) {
	// Each pass reads at least one byte into the bounded buffer or
	// returns, so the loop ends within len(rr.buf) passes.
	for {
		if rr.r < rr.w {
			rep, err := rr.parse(false)
			if err != errNeedMore {
				return rep, err
			}
		}
		if rr.w == len(rr.buf) {
			if rr.r == 0 {
				return httpReply{}, errReplyTooLong
			}
			rr.w = copy(rr.buf, rr.buf[rr.r:rr.w])
			rr.r = 0
		}
		n, err := c.Read(rr.buf[rr.w:])
		rr.w += n
		switch {
		case err == io.EOF && rr.r == rr.w:
			return httpReply{}, errIdleClosed
		case err == io.EOF:
			return rr.parse(true)
		case err != nil:
			return httpReply{}, err
		}
	}
}

// parse parses the reply at the start of the buffered bytes and consumes
// it, or returns errNeedMore. eof says no more bytes will come.
func (rr *replyReader) parse(eof bool) (httpReply, error) {
	rep, n, err := parseReply(rr.buf[rr.r:rr.w], eof, len(rr.buf), &rr.body)
	switch {
	case err == errNeedMore && eof:
		return rep, errShortReply
	case err != nil:
		return rep, err
	}
	rr.r += n
	if rr.r == rr.w {
		rr.r, rr.w = 0, 0
	}
	return rep, nil
}

var (
	crlf     = []byte("\r\n")
	crlfCRLF = []byte("\r\n\r\n")
	colon    = []byte(":")
	comma    = []byte(",")
)

// parseReply parses the reply at the start of b and returns it with its
// length, or errNeedMore if b holds only part of it. eof says b is all
// there will be, so a body without framing ends with it. A reply longer
// than limit is errReplyTooLong. A chunked body is joined into *chunks.
func parseReply(b []byte, eof bool, limit int, chunks *[]byte) (httpReply, int, error) {
	var rep httpReply
	hdrEnd := bytes.Index(b, crlfCRLF)
	if hdrEnd < 0 {
		if len(b) > maxHeaderLen {
			return rep, 0, errBadHTTP
		}
		return rep, 0, errNeedMore
	}
	line, rest, _ := bytes.Cut(b[:hdrEnd+2], crlf)
	status, minor, ok := parseStatusLine(line)
	if !ok || status < 200 { // a tracker has no use for 1xx replies
		return rep, 0, errBadHTTP
	}
	rep.status = status
	var (
		length             = -1 // Content-Length, or -1
		chunked, keepAlive bool
	)
	// Each pass consumes a line of the headers.
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, crlf)
		name, value, ok := bytes.Cut(line, colon)
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return rep, 0, errBadHTTP
		}
		value = bytes.Trim(value, " \t")
		switch {
		case equalFoldASCII(name, "content-length"):
			n, ok := parseDecimal(value)
			if !ok || length >= 0 && n != length {
				return rep, 0, errBadHTTP
			}
			length = n
		case equalFoldASCII(name, "transfer-encoding"):
			// The generator asks for nothing else (no TE header).
			if !equalFoldASCII(value, "chunked") {
				return rep, 0, errBadHTTP
			}
			chunked = true
		case equalFoldASCII(name, "connection"):
			// Each pass consumes a token of the list.
			for len(value) > 0 {
				var tok []byte
				tok, value, _ = bytes.Cut(value, comma)
				tok = bytes.Trim(tok, " \t")
				rep.close = rep.close || equalFoldASCII(tok, "close")
				keepAlive = keepAlive || equalFoldASCII(tok, "keep-alive")
			}
		}
	}
	if chunked && length >= 0 {
		return rep, 0, errBadHTTP // RFC 9112 §6.3: a sign of smuggling
	}
	rep.close = rep.close || minor == 0 && !keepAlive
	start := hdrEnd + 4
	switch {
	case status == 204 || status == 304:
		return rep, start, nil
	case chunked:
		body, n, err := dechunk((*chunks)[:0], b[start:], limit)
		*chunks = body
		if err != nil {
			return rep, 0, err
		}
		rep.body = body
		return rep, start + n, nil
	case length >= 0:
		if length > limit-start {
			return rep, 0, errReplyTooLong
		}
		if len(b)-start < length {
			return rep, 0, errNeedMore
		}
		rep.body = b[start : start+length]
		return rep, start + length, nil
	case !eof:
		return rep, 0, errNeedMore // the body ends with the connection
	}
	rep.body, rep.close = b[start:], true
	return rep, len(b), nil
}

// parseStatusLine parses "HTTP/1.x NNN reason".
func parseStatusLine(line []byte) (status, minor int, ok bool) {
	if len(line) < len("HTTP/1.1 200") || string(line[:7]) != "HTTP/1." ||
		line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return 0, 0, false
	}
	switch line[7] {
	case '0':
	case '1':
		minor = 1
	default:
		return 0, 0, false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		status = status*10 + int(c-'0')
	}
	return status, minor, status >= 100
}

// dechunk appends the data of the chunked body at the start of b to dst
// and returns it with the body's length in b, trailers included.
func dechunk(dst, b []byte, limit int) ([]byte, int, error) {
	i := 0
	// Each pass consumes a chunk of at least three bytes ("0\r\n").
	for {
		end := bytes.Index(b[i:], crlf)
		if end < 0 {
			if len(b)-i > maxChunkLine {
				return dst, 0, errBadHTTP
			}
			return dst, 0, errNeedMore
		}
		size, ok := parseChunkSize(b[i : i+end])
		if !ok {
			return dst, 0, errBadHTTP
		}
		i += end + 2
		if size == 0 {
			break
		}
		if size > limit {
			return dst, 0, errReplyTooLong
		}
		if len(b)-i < size+2 {
			return dst, 0, errNeedMore
		}
		if b[i+size] != '\r' || b[i+size+1] != '\n' {
			return dst, 0, errBadHTTP
		}
		dst = append(dst, b[i:i+size]...)
		i += size + 2
	}
	// Trailer lines, then an empty line; each pass consumes a line.
	for {
		end := bytes.Index(b[i:], crlf)
		if end < 0 {
			if len(b)-i > maxHeaderLen {
				return dst, 0, errBadHTTP
			}
			return dst, 0, errNeedMore
		}
		i += end + 2
		if end == 0 {
			return dst, i, nil
		}
	}
}

// parseChunkSize parses a chunk-size line: hex digits, then optional
// whitespace and extensions (";name=value"), which are ignored.
func parseChunkSize(line []byte) (int, bool) {
	n, i := 0, 0
	for ; i < len(line); i++ {
		d, ok := unhex(line[i])
		if !ok {
			break
		}
		if i == 7 {
			return 0, false // 28 bits are far beyond any reply
		}
		n = n<<4 | int(d)
	}
	if i == 0 {
		return 0, false
	}
	for _, c := range line[i:] {
		if c == ';' {
			break
		}
		if c != ' ' && c != '\t' {
			return 0, false
		}
	}
	return n, true
}

// unhex returns the value of the hex digit c.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseDecimal parses a Content-Length: digits only, below 1e9.
func parseDecimal(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// equalFoldASCII reports whether b equals lower, a lower-case ASCII
// string, ignoring the case of b.
func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
