package httpcompat

import (
	"strconv"
	"time"
)

// Reply heads as the connection loop writes them, appended to the
// connection's output buffer without allocating:
//
//	HTTP/1.1 200 OK                  HTTP/1.0 when the request was 1.0
//	Content-Type: text/plain
//	Date: Wed, 25 Nov 2026 15:04:05 GMT
//	Content-Length: 123
//	Content-Encoding: gzip           full scrape, when the client accepts gzip
//	Vary: Accept-Encoding            full scrape
//	Allow: GET, HEAD                 405 only
//	Connection: close                when the connection closes after the reply,
//	Connection: keep-alive           or to an HTTP/1.0 client that asked to keep it
//
// The Date is cached per connection as text and formatted again at most
// once a second (RFC 9110 asks for it; clients ignore it).

// replyHead is what a reply head says besides its status and length.
type replyHead struct {
	http11    bool
	close     bool // Connection: close
	keepAlive bool // Connection: keep-alive (HTTP/1.0 only)
	full      bool // a full scrape: Vary: Accept-Encoding
	gzip      bool // Content-Encoding: gzip
}

// statusLines are the status lines of every status the server sends,
// without the version.
var statusLines = map[int]string{
	statusOK:                  " 200 OK\r\n",
	statusBadRequest:          " 400 Bad Request\r\n",
	statusNotFound:            " 404 Not Found\r\n",
	statusMethodNotAllowed:    " 405 Method Not Allowed\r\n",
	statusContentTooLarge:     " 413 Content Too Large\r\n",
	statusHeaderTooLarge:      " 431 Request Header Fields Too Large\r\n",
	statusNotImplemented:      " 501 Not Implemented\r\n",
	statusVersionNotSupported: " 505 HTTP Version Not Supported\r\n",
}

// statusLine returns the status line of status, without the version;
// the common one without a map lookup.
func statusLine(status int) string {
	if status == statusOK {
		return " 200 OK\r\n"
	}
	if s, ok := statusLines[status]; ok {
		return s
	}
	return " 500 Internal Server Error\r\n"
}

// errorBodies are the bodies of the replies the connection loop refuses
// requests with, before the core sees them.
var errorBodies = map[int][]byte{
	statusBadRequest:          []byte("400 Bad Request\n"),
	statusContentTooLarge:     []byte("413 Content Too Large\n"),
	statusHeaderTooLarge:      []byte("431 Request Header Fields Too Large\n"),
	statusNotImplemented:      []byte("501 Not Implemented: Transfer-Encoding\n"),
	statusVersionNotSupported: []byte("505 HTTP Version Not Supported\n"),
}

// appendHead appends a reply head for status and a body of length bytes.
func appendHead(dst []byte, status, length int, date []byte, h replyHead) []byte {
	if h.http11 {
		dst = append(dst, "HTTP/1.1"...)
	} else {
		dst = append(dst, "HTTP/1.0"...)
	}
	dst = append(dst, statusLine(status)...)
	dst = append(dst, "Content-Type: text/plain\r\nDate: "...)
	dst = append(dst, date...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(length), 10)
	dst = append(dst, "\r\n"...)
	if h.gzip {
		dst = append(dst, "Content-Encoding: gzip\r\n"...)
	}
	if h.full {
		dst = append(dst, "Vary: Accept-Encoding\r\n"...)
	}
	if status == statusMethodNotAllowed {
		dst = append(dst, "Allow: GET, HEAD\r\n"...)
	}
	switch {
	case h.close:
		dst = append(dst, "Connection: close\r\n"...)
	case h.keepAlive:
		dst = append(dst, "Connection: keep-alive\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// dateLen is the length of an HTTP date (RFC 9110's IMF-fixdate).
const dateLen = len("Mon, 02 Jan 2006 15:04:05 GMT")

// A dateCache holds the text of the current second's Date header.
type dateCache struct {
	sec  int64 // the Unix second text is for; 0 before the first use
	text [dateLen]byte
}

// at returns the Date header's text for now, formatting it only when the
// second changed since the last call.
func (d *dateCache) at(now time.Time) []byte {
	if sec := now.Unix(); sec != d.sec {
		now.UTC().AppendFormat(d.text[:0], "Mon, 02 Jan 2006 15:04:05 GMT")
		d.sec = sec
	}
	return d.text[:]
}
