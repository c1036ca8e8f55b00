package httpcompat

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

// headWant is what parseHead should make of one input.
type headWant struct {
	n, status      int // n < 0: the whole input
	method         method
	path, rawQuery string
	http11, close  bool
	keepAlive      bool
	contentLength  int
	realIP         []string
	acceptEncoding []string
}

func TestParseHead(t *testing.T) {
	long := "GET /announce?" + strings.Repeat("x", 1100) + " HTTP/1.1\r\n\r\n"
	tests := []struct {
		name string
		in   string
		want headWant
	}{
		{"GET", "GET /announce?a=1 HTTP/1.1\r\nHost: t\r\n\r\n",
			headWant{n: -1, method: methodGet, path: "/announce", rawQuery: "a=1", http11: true}},
		{"no Host", "GET /scrape HTTP/1.1\r\n\r\n", headWant{n: -1, method: methodGet, path: "/scrape", http11: true}},
		{"HEAD", "HEAD /announce HTTP/1.1\r\n\r\n", headWant{n: -1, method: methodHead, path: "/announce", http11: true}},
		{"POST", "POST /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
			headWant{n: len("POST /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\n"), method: methodOther, path: "/announce", http11: true, contentLength: 3}},
		{"lowercase method", "get /announce HTTP/1.1\r\n\r\n", headWant{n: -1, method: methodOther, path: "/announce", http11: true}},
		{"bare LF", "GET /announce?a HTTP/1.1\nX: y\n\n", headWant{n: -1, method: methodGet, path: "/announce", rawQuery: "a", http11: true}},
		{"leading empty lines", "\r\n\nGET / HTTP/1.1\r\n\r\n", headWant{n: -1, method: methodGet, path: "/", http11: true}},
		{"pipelined", "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			headWant{n: len("GET /a HTTP/1.1\r\n\r\n"), method: methodGet, path: "/a", http11: true}},
		{"absolute-form", "GET http://tracker.example:6969/pk/announce?x=%41 HTTP/1.1\r\n\r\n",
			headWant{n: -1, method: methodGet, path: "/pk/announce", rawQuery: "x=%41", http11: true}},
		{"absolute-form, no path", "GET HTTPS://t?x HTTP/1.1\r\n\r\n", headWant{n: -1, method: methodGet, path: "/", rawQuery: "x", http11: true}},
		{"percent-encoded path", "GET /p%2Fk/%61nnounce+?q HTTP/1.1\r\n\r\n",
			headWant{n: -1, method: methodGet, path: "/p/k/announce+", rawQuery: "q", http11: true}},
		{"query keeps its escapes", "GET /announce?info_hash=%00%FF+ HTTP/1.1\r\n\r\n",
			headWant{n: -1, method: methodGet, path: "/announce", rawQuery: "info_hash=%00%FF+", http11: true}},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", headWant{n: -1, method: methodGet, path: "/", close: true}},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n", headWant{n: -1, method: methodGet, path: "/", keepAlive: true}},
		{"HTTP/1.1 close", "GET / HTTP/1.1\r\nConnection: upgrade, CLOSE\r\n\r\n", headWant{n: -1, method: methodGet, path: "/", http11: true, close: true}},
		{"HTTP/1.9", "GET / HTTP/1.9\r\n\r\n", headWant{n: -1, method: methodGet, path: "/", http11: true}},
		{"headers", "GET / HTTP/1.1\r\nx-forwarded-for: 10.0.0.1 \r\nAccept-Encoding:gzip\r\nX-Forwarded-For:\t192.0.2.1, 10.0.0.2\r\n\r\n",
			headWant{n: -1, method: methodGet, path: "/", http11: true, realIP: []string{"10.0.0.1", "192.0.2.1, 10.0.0.2"}, acceptEncoding: []string{"gzip"}}},
		{"same Content-Length twice", "GET / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
			headWant{n: -1, method: methodGet, path: "/", http11: true, contentLength: 2}},
		{"non-ASCII path", "GET /\xe2\x98\x83 HTTP/1.1\r\n\r\n", headWant{n: -1, method: methodGet, path: "/\xe2\x98\x83", http11: true}},

		{"incomplete line", "GET /announce HT", headWant{}},
		{"incomplete head", "GET / HTTP/1.1\r\nHost: t\r\n", headWant{}},
		{"empty", "", headWant{}},
		{"lone CR", "\r", headWant{}},

		{"garbage", "hello\r\n\r\n", headWant{status: 400}},
		{"binary", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", headWant{status: 400}},
		{"no version", "GET /\r\n\r\n", headWant{status: 400}},
		{"two spaces", "GET  / HTTP/1.1\r\n\r\n", headWant{status: 400}},
		{"trailing space", "GET / HTTP/1.1 \r\n\r\n", headWant{status: 400}},
		{"bad version", "GET / HTTQ/1.1\r\n\r\n", headWant{status: 400}},
		{"HTTP/2", "GET / HTTP/2.0\r\n\r\n", headWant{status: 505}},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", headWant{status: 505}},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", headWant{status: 505}},
		{"asterisk-form", "OPTIONS * HTTP/1.1\r\n\r\n", headWant{status: 400}},
		{"authority-form", "CONNECT t:443 HTTP/1.1\r\n\r\n", headWant{status: 400}},
		{"bad escape", "GET /ann%zzounce HTTP/1.1\r\n\r\n", headWant{status: 400}},
		{"cut escape", "GET /announce% HTTP/1.1\r\n\r\n", headWant{status: 400}},
		{"control byte in target", "GET /a\x01 HTTP/1.1\r\n\r\n", headWant{status: 400}},
		{"folding", "GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", headWant{status: 400}},
		{"folding with a tab", "GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n\r\n", headWant{status: 400}},
		{"space before colon", "GET / HTTP/1.1\r\nHost : t\r\n\r\n", headWant{status: 400}},
		{"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", headWant{status: 400}},
		{"bare CR", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", headWant{status: 400}},
		{"bad Content-Length", "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", headWant{status: 400}},
		{"two Content-Lengths", "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", headWant{status: 400}},
		{"large body", "GET / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", headWant{status: 413}},
		{"chunked", "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", headWant{status: 501}},
		{"oversize", long, headWant{status: 431}},
		{"oversize, incomplete", long[:1030], headWant{status: 431}},
		{"too many real-IP lines", "GET / HTTP/1.1\r\n" + strings.Repeat("X-Forwarded-For: 1.2.3.4\r\n", 17) + "\r\n", headWant{status: 431}},
	}
	var h requestHead
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, status := parseHead([]byte(tt.in), 1024, "X-Forwarded-For", &h)
			w := tt.want
			if w.status == 0 {
				w.status = statusOK
			}
			if w.n < 0 {
				w.n = len(tt.in)
			}
			if n != w.n || status != w.status {
				t.Fatalf("parseHead(%q) = %d, %d; want %d, %d", tt.in, n, status, w.n, w.status)
			}
			if n == 0 {
				return
			}
			got := headWant{n: n, status: status, method: h.method, path: h.path, rawQuery: h.rawQuery,
				http11: h.http11, close: h.close, keepAlive: h.keepAlive, contentLength: h.contentLength,
				realIP: h.realIP, acceptEncoding: h.acceptEncoding}
			if !equalHeads(got, w) {
				t.Errorf("parseHead(%q) = %+v, want %+v", tt.in, got, w)
			}
		})
	}
}

func equalHeads(a, b headWant) bool {
	eq := func(x, y []string) bool {
		return strings.Join(x, "\x00") == strings.Join(y, "\x00") && len(x) == len(y)
	}
	return eq(a.realIP, b.realIP) && eq(a.acceptEncoding, b.acceptEncoding) &&
		a.n == b.n && a.status == b.status && a.method == b.method && a.path == b.path && a.rawQuery == b.rawQuery &&
		a.http11 == b.http11 && a.close == b.close && a.keepAlive == b.keepAlive && a.contentLength == b.contentLength
}

// A path that decodes to more than maxPathLen bytes is kept raw, and so
// routes to 404 like any path that long.
func TestParseHeadLongPath(t *testing.T) {
	var h requestHead
	raw := "/" + strings.Repeat("%41", maxPathLen) + "/announce"
	in := "GET " + raw + " HTTP/1.1\r\n\r\n"
	if n, status := parseHead([]byte(in), 8192, "X-Forwarded-For", &h); n != len(in) || status != statusOK {
		t.Fatalf("parseHead = %d, %d", n, status)
	}
	if h.path != raw || route(h.path) != notFound {
		t.Errorf("path %q, route %v; want the raw path, not found", h.path, route(h.path))
	}
	short := "GET /%41%42/announce HTTP/1.1\r\n\r\n"
	if n, _ := parseHead([]byte(short), 8192, "X-Forwarded-For", &h); n == 0 || h.path != "/AB/announce" || route(h.path) != announceEndpoint {
		t.Errorf("path %q, route %v; want /AB/announce, announce", h.path, route(h.path))
	}
}

func TestParseHeadDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	in := []byte("GET /pk%2F/announce?" + benchQuery(hashOf("x"), "") + " HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n")
	var h requestHead
	if n := testing.AllocsPerRun(100, func() { parseHead(in, 8192, "X-Forwarded-For", &h) }); n != 0 {
		t.Errorf("parseHead allocated %v times, want 0", n)
	}
}

func BenchmarkParseHead(b *testing.B) {
	in := []byte("GET /announce?" + benchQuery(hashOf("x"), "") + " HTTP/1.1\r\nHost: tracker\r\nUser-Agent: qBittorrent/4.6.5\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n")
	var h requestHead
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if n, _ := parseHead(in, 8192, "X-Forwarded-For", &h); n != len(in) {
			b.Fatal(n)
		}
	}
}

// FuzzRequestHead feeds arbitrary bytes to the head parser. It must not
// panic; a head it accepts must be consistent (a token method, a path
// that starts with '/', no more consumed than given), parse the same when
// cut right after itself, be incomplete when cut short, and agree with
// net/url on the path and query of an origin-form target.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET /announce?info_hash=%00%01&port=1 HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET http://t:1/pk/scrape?x HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, ::1\r\n\r\n",
		"GET /%70k/announce HTTP/1.1\nAccept-Encoding: gzip;q=0\n\n",
		"POST /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1024
		var h requestHead
		n, status := parseHead(in, limit, "X-Forwarded-For", &h)
		if status != statusOK {
			if n != 0 || errorBodies[status] == nil {
				t.Fatalf("parseHead(%q) = %d, %d: want 0 and a status the server can send", in, n, status)
			}
			return
		}
		if n == 0 {
			if len(in) >= limit {
				t.Fatalf("parseHead(%q): incomplete at %d bytes, over the limit", in, len(in))
			}
			return
		}
		if n > len(in) || n > limit {
			t.Fatalf("parseHead(%q) consumed %d of %d bytes (limit %d)", in, n, len(in), limit)
		}
		if h.path == "" || h.path[0] != '/' || h.contentLength < 0 || h.contentLength > maxBody {
			t.Fatalf("parseHead(%q): path %q, content length %d", in, h.path, h.contentLength)
		}
		line := in[bytes.IndexFunc(in, func(r rune) bool { return r != '\r' && r != '\n' }):]
		m, rest, _ := bytes.Cut(line, []byte(" "))
		if !isToken(m) || (h.method == methodGet) != (string(m) == "GET") || (h.method == methodHead) != (string(m) == "HEAD") {
			t.Fatalf("parseHead(%q): method %v for %q", in, h.method, m)
		}
		path, query := h.path, h.rawQuery
		target, _, _ := bytes.Cut(rest, []byte(" "))
		if target[0] == '/' && len(path) <= maxPathLen {
			if u, err := url.ParseRequestURI(string(target)); err == nil && (u.Path != path || u.RawQuery != query) {
				t.Fatalf("parseHead(%q): path %q, query %q; net/url says %q, %q", in, path, query, u.Path, u.RawQuery)
			}
		}
		var h2 requestHead
		if n2, s2 := parseHead(in[:n], limit, "X-Forwarded-For", &h2); n2 != n || s2 != statusOK || h2.path != path || h2.rawQuery != query {
			t.Fatalf("parseHead(%q) = %d; cut after the head: %d, %d, path %q", in, n, n2, s2, h2.path)
		}
		if n2, s2 := parseHead(in[:n-1], limit, "X-Forwarded-For", &h2); n2 != 0 || s2 != statusOK {
			t.Fatalf("parseHead(%q) = %d; cut one byte short: %d, %d, want incomplete", in, n, n2, s2)
		}
	})
}
