package httpcompat

import (
	"bytes"
	"unsafe"
)

// The request-head parser reads HTTP/1.x request lines and headers
// (RFC 9112) from untrusted bytes in place: it neither copies the head
// nor allocates, and keeps only what the tracker needs. Its rules:
//
//	request-line = method SP request-target SP HTTP-version
//	header-line  = field-name ":" OWS field-value OWS
//	line end     = CRLF or a bare LF
//
// Empty lines before the request line are skipped (RFC 9112, section
// 2.2). The target is origin-form ("/path?query") or absolute-form
// ("http://host/path?query", reduced to its path and query); anything
// else is a 400. The path is percent-decoded, only when it holds a '%',
// into the head's own buffer; a bad escape is a 400. Header names are
// matched without regard to case. A line that starts with white space
// (obsolete line folding), a control byte other than a tab in a value, a
// bare CR or a field name that is not a token is a 400. HTTP/1.0 and
// HTTP/1.1 are served, a later HTTP/1.x as 1.1 (RFC 9110, section 6.2);
// any other version, HTTP/2's preface among them, gets 505. A head longer
// than the limit (Config.MaxHeaderBytes) gets 431. A body is allowed only
// with a Content-Length of at most maxBody (the connection reads and
// drops it); a longer one gets 413, a Transfer-Encoding 501.

// maxBody bounds the body of a request the connection reads and drops.
// Clients send none with GET; a longer one is refused rather than read.
const maxBody = 64 << 10

// maxHeaderVals bounds how many lines of the real-IP header and of
// Accept-Encoding one request may send (a line's value may itself be a
// list). More is refused with 431: no proxy chain or client needs it.
const maxHeaderVals = 16

// Status codes the parser and the connection loop answer with.
const (
	statusOK                  = 200
	statusBadRequest          = 400
	statusNotFound            = 404
	statusMethodNotAllowed    = 405
	statusContentTooLarge     = 413
	statusHeaderTooLarge      = 431
	statusNotImplemented      = 501
	statusVersionNotSupported = 505

	needMore = 0 // nextLine: the line is not complete yet
)

// requestHead is one parsed request head. The strings in its request
// alias the parsed bytes or its pathBuf, and are valid until either is
// overwritten.
type requestHead struct {
	request
	http11        bool // HTTP/1.1 (or a later 1.x); else HTTP/1.0
	close         bool // the connection closes after this reply
	keepAlive     bool // an HTTP/1.0 client asked to keep the connection
	contentLength int  // the body's length, at most maxBody

	realIPVals [maxHeaderVals]string
	aeVals     [maxHeaderVals]string
	pathBuf    [maxPathLen]byte
}

// parseHead parses the request head at the start of b into h, matching
// realIPHeader (Config.RealIPHeader) without regard to case. It returns
// the head's length in bytes (line ends and skipped empty lines included)
// and statusOK; or 0 and statusOK when b holds no complete head yet and
// more bytes may complete it; or 0 and the status to refuse the request
// with, after which the connection must be closed. A head may be at most
// limit bytes long. v.remote and v.start are left zero for the caller.
func parseHead(b []byte, limit int, realIPHeader string, h *requestHead) (n, status int) {
	h.request = request{}
	h.http11, h.close, h.keepAlive, h.contentLength = false, false, false, 0
	if len(b) > limit {
		b = b[:limit]
	}
	for n < len(b) && (b[n] == '\n' || b[n] == '\r' && n+1 < len(b) && b[n+1] == '\n') {
		n++
	}
	line, next, st := nextLine(b, n, limit)
	if st == needMore {
		return 0, statusOK
	} else if st != statusOK {
		return 0, st
	}
	if st := h.parseRequestLine(line); st != statusOK {
		return 0, st
	}
	nReal, nAE := 0, 0
	sawClose, sawKeepAlive, sawLength := false, false, false
	for {
		if line, next, st = nextLine(b, next, limit); st == needMore {
			return 0, statusOK
		} else if st != statusOK {
			return 0, st
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := splitHeader(line)
		if !ok {
			return 0, statusBadRequest
		}
		switch {
		case equalFold(name, realIPHeader):
			if nReal == len(h.realIPVals) {
				return 0, statusHeaderTooLarge
			}
			h.realIPVals[nReal] = bstr(value)
			nReal++
		case equalFold(name, "Accept-Encoding"):
			if nAE == len(h.aeVals) {
				return 0, statusHeaderTooLarge
			}
			h.aeVals[nAE] = bstr(value)
			nAE++
		case equalFold(name, "Connection"):
			c, k := connectionTokens(value)
			sawClose, sawKeepAlive = sawClose || c, sawKeepAlive || k
		case equalFold(name, "Content-Length"):
			cl, ok := parseContentLength(value)
			if !ok || sawLength && cl != h.contentLength {
				return 0, statusBadRequest
			}
			if cl > maxBody {
				return 0, statusContentTooLarge
			}
			h.contentLength, sawLength = cl, true
		case equalFold(name, "Transfer-Encoding"):
			return 0, statusNotImplemented
		}
	}
	if h.http11 {
		h.close = sawClose
	} else {
		h.close = sawClose || !sawKeepAlive
		h.keepAlive = !h.close
	}
	if nReal > 0 {
		h.realIP = h.realIPVals[:nReal]
	}
	if nAE > 0 {
		h.acceptEncoding = h.aeVals[:nAE]
	}
	return next, statusOK
}

// nextLine returns the line of b that starts at i, without its line end,
// and the index after that end, with statusOK; or needMore when b ends
// first and is shorter than limit; or 431 when it is not.
func nextLine(b []byte, i, limit int) (line []byte, next, status int) {
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		if len(b) >= limit {
			return nil, 0, statusHeaderTooLarge
		}
		return nil, 0, needMore
	}
	line, next = b[i:i+j], i+j+1
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, next, statusOK
}

// parseRequestLine fills h's method, version, path and query from line.
func (h *requestHead) parseRequestLine(line []byte) int {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !isToken(line[:sp]) {
		return statusBadRequest
	}
	switch m := line[:sp]; string(m) { // no allocation: compared in place
	case "GET":
		h.method = methodGet
	case "HEAD":
		h.method = methodHead
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return statusBadRequest
	}
	target, version := rest[:sp], rest[sp+1:]
	// Version first: a client speaking HTTP/2 or garbage learns that,
	// whatever its target.
	if len(version) != len("HTTP/1.1") || string(version[:5]) != "HTTP/" || version[6] != '.' ||
		!isDigit(version[5]) || !isDigit(version[7]) {
		return statusBadRequest
	}
	if version[5] != '1' {
		return statusVersionNotSupported
	}
	h.http11 = version[7] != '0'
	return h.parseTarget(target)
}

// parseTarget fills h's path and query from an origin-form or
// absolute-form request target.
func (h *requestHead) parseTarget(t []byte) int {
	for _, c := range t {
		if c < 0x21 || c == 0x7f {
			return statusBadRequest
		}
	}
	if t[0] != '/' {
		// Absolute-form: scheme "://" authority [path] ["?" query].
		i := 0
		for i < len(t) && (isAlpha(t[i]) || i > 0 && (isDigit(t[i]) || t[i] == '+' || t[i] == '-' || t[i] == '.')) {
			i++
		}
		if i == 0 || !bytes.HasPrefix(t[i:], []byte("://")) {
			return statusBadRequest
		}
		t = t[i+3:]
		end := bytes.IndexAny(t, "/?")
		if end < 0 {
			end = len(t)
		}
		t = t[end:]
	}
	path := t
	if q := bytes.IndexByte(t, '?'); q >= 0 {
		path, h.rawQuery = t[:q], bstr(t[q+1:])
	}
	switch {
	case len(path) == 0:
		h.path = "/"
	case bytes.IndexByte(path, '%') < 0:
		h.path = bstr(path)
	default:
		n, ok := unescapePath(h.pathBuf[:], path)
		switch {
		case !ok:
			return statusBadRequest
		case n > len(h.pathBuf):
			// Longer than any path we serve: the raw path, longer still,
			// routes to 404 as well.
			h.path = bstr(path)
		default:
			h.path = bstr(h.pathBuf[:n])
		}
	}
	return statusOK
}

// unescapePath decodes the %XX escapes of src into dst and returns the
// decoded length, which may exceed len(dst) (what does not fit is not
// written), and whether every escape was valid. '+' stays '+' in a path.
func unescapePath(dst, src []byte) (n int, ok bool) {
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c == '%' {
			if i+2 >= len(src) {
				return 0, false
			}
			hi, lo := unhex(src[i+1]), unhex(src[i+2])
			if hi|lo > 0xf {
				return 0, false
			}
			c = hi<<4 | lo
			i += 2
		}
		if n < len(dst) {
			dst[n] = c
		}
		n++
	}
	return n, true
}

// splitHeader splits a header line into its name and its value without
// surrounding white space, and reports whether the line is well formed.
func splitHeader(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) { // folding starts with white space: not a token
		return nil, nil, false
	}
	value = line[colon+1:]
	for _, c := range value {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return nil, nil, false
		}
	}
	return line[:colon], trimOWS(value), true
}

// connectionTokens reports whether a Connection value lists close and
// keep-alive.
func connectionTokens(v []byte) (close, keepAlive bool) {
	for len(v) > 0 {
		item := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		item = trimOWS(item)
		close = close || equalFold(item, "close")
		keepAlive = keepAlive || equalFold(item, "keep-alive")
	}
	return close, keepAlive
}

// parseContentLength parses a Content-Length value: decimal digits only.
func parseContentLength(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold reports whether b and s are equal under ASCII case folding.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return len(b) > 0
}

// tokenChars are RFC 9110's tchar: the bytes of methods and field names.
var tokenChars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = isAlpha(byte(c)) || isDigit(byte(c))
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// bstr returns b's bytes as a string without copying. The string aliases
// b: it must not outlive the bytes or see them change. The parser hands
// out such strings for one request only, and the core keeps none of them
// (see request).
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
