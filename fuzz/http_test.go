package fuzz

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// httpParam is one name=value item of a query, decoded the slow way.
type httpParam struct{ name, value string }

// refHTTPQuery decodes a raw query with net/url: items split at '&', each
// at its first '=', both halves form-unescaped ('+' is a space). Any
// malformed escape makes the whole query malformed, as in package
// httpcompat.
func refHTTPQuery(query string) ([]httpParam, bool) {
	var params []httpParam
	for _, item := range strings.Split(query, "&") {
		if item == "" {
			continue
		}
		k, v, _ := strings.Cut(item, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, false
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, false
		}
		params = append(params, httpParam{k, v})
	}
	return params, true
}

// first returns the first value of name, as url.Values.Get does.
func first(params []httpParam, name string) (string, bool) {
	for _, p := range params {
		if p.name == name {
			return p.value, true
		}
	}
	return "", false
}

// refAnnounce is ParseAnnounce written with net/url and strconv.
func refAnnounce(query string) (q httpcompat.AnnounceQuery, ips [3]netip.Addr, ok bool) {
	params, ok := refHTTPQuery(query)
	if !ok {
		return q, ips, false
	}
	q.NumWant, q.Compact = -1, true
	fixed := func(name string, dst []byte) bool {
		v, ok := first(params, name)
		return ok && copy(dst, v) == len(dst) && len(v) == len(dst)
	}
	number := func(name string, bits int, required bool, dst *uint64) bool {
		v, ok := first(params, name)
		if !ok {
			return !required
		}
		n, err := strconv.ParseUint(v, 10, bits)
		*dst = n
		return err == nil
	}
	var port uint64
	if !fixed("info_hash", q.InfoHash[:]) || !fixed("peer_id", q.PeerID[:]) ||
		!number("port", 16, true, &port) || !number("left", 64, true, &q.Left) ||
		!number("uploaded", 64, false, &q.Uploaded) || !number("downloaded", 64, false, &q.Downloaded) {
		return q, ips, false
	}
	q.Port = uint16(port)
	if v, ok := first(params, "event"); ok {
		events := map[string]peertable.Event{"": peertable.EventNone, "paused": peertable.EventNone,
			"started": peertable.EventStarted, "completed": peertable.EventCompleted, "stopped": peertable.EventStopped}
		e, known := events[v]
		if !known {
			return q, ips, false
		}
		q.Event = e
	}
	if v, ok := first(params, "numwant"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		// ParseInt reports a range error as soon as the digits overflow,
		// before it has seen the rest: "99999999999999999999A" is out of
		// range to it, not malformed. Only well-formed numbers saturate.
		if err != nil && (!errors.Is(err, strconv.ErrRange) || !signedDecimal(v)) {
			return q, ips, false
		}
		q.NumWant = int(max(-1, min(n, math.MaxInt32)))
	}
	if v, ok := first(params, "key"); ok {
		q.Key = refKey(v)
	}
	if v, ok := first(params, "compact"); ok {
		q.Compact = v != "0"
	}
	for i, name := range []string{"ip", "ipv4", "ipv6"} {
		if v, ok := first(params, name); ok && len(v) <= 53 {
			ips[i] = refIPParam(v)
		}
	}
	return q, ips, true
}

// signedDecimal reports whether v is decimal digits with an optional sign.
func signedDecimal(v string) bool {
	if v != "" && (v[0] == '+' || v[0] == '-') {
		v = v[1:]
	}
	return v != "" && strings.Trim(v, "0123456789") == ""
}

// refKey reads a key as AnnounceQuery.Key documents.
func refKey(v string) uint32 {
	if len(v) >= 1 && len(v) <= 8 {
		if n, err := strconv.ParseUint(v, 16, 32); err == nil {
			return uint32(n)
		}
	}
	if len(v) >= 1 && len(v) <= 10 && strings.Trim(v, "0123456789") == "" {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			return uint32(n)
		}
	}
	h := fnv.New32a()
	h.Write([]byte(v))
	return h.Sum32()
}

func refIPParam(v string) netip.Addr {
	a, err := netip.ParseAddr(v)
	if err != nil {
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			return netip.Addr{}
		}
		a = ap.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}
	}
	return a.Unmap()
}

// refScrape is ParseScrape written with net/url.
func refScrape(query string, limit int) ([]peertable.InfoHash, bool) {
	params, ok := refHTTPQuery(query)
	if !ok {
		return nil, false
	}
	var out []peertable.InfoHash
	for _, p := range params {
		if p.name != "info_hash" {
			continue
		}
		if len(p.value) != 20 || len(out) == limit {
			return nil, false
		}
		out = append(out, peertable.InfoHash([]byte(p.value)))
	}
	return out, true
}

func wantQueryError(t *testing.T, err error) {
	t.Helper()
	var qe *httpcompat.QueryError
	if !errors.As(err, &qe) || qe.Error() == "" {
		t.Fatalf("error %v (%T) is not a *httpcompat.QueryError with a text", err, err)
	}
}

func FuzzHTTPQuery(f *testing.F) {
	ih := "%8A%1B%00%FFabcdefghijklmnop"
	f.Add("info_hash=" + ih + "&peer_id=-qB4650-k8hj0wgej6ch&port=51413&uploaded=0&downloaded=0&left=1048576&corrupt=0&key=5A2B3C4D&event=started&numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0")
	f.Add("info_hash=" + ih + "&peer_id=-TR4050-++++++++++++&port=1&left=0&compact=0&key=1234567890&numwant=-5&ipv6=%5B2001%3Adb8%3A%3A1%5D%3A6881&ipv4=10.0.0.1&ip=::ffff:1.2.3.4")
	f.Add("info_hash=" + ih + "&info_hash=" + ih + "&info_hash=%zz&port=0")
	f.Add("info%5Fhash=" + ih + "&&&peer_id=%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B%2B&port=%36%38%38%31&left=99999999999999999999")
	f.Add("=&=%&a=b=c;d&event=paused&key=&numwant=%2B7")
	f.Add("")
	f.Fuzz(func(t *testing.T, query string) {
		var q httpcompat.AnnounceQuery
		err := httpcompat.ParseAnnounce(query, &q)
		want, wantIPs, ok := refAnnounce(query)
		if ok != (err == nil) {
			t.Fatalf("ParseAnnounce(%q) error = %v, reference says ok = %v", query, err, ok)
		}
		if err != nil {
			wantQueryError(t, err)
		} else {
			ip, ipv4, ipv6 := q.IPParams()
			if got := [3]netip.Addr{ip, ipv4, ipv6}; got != wantIPs {
				t.Errorf("ParseAnnounce(%q).IPParams() = %v, reference %v", query, got, wantIPs)
			}
			// ParseAnnounce overwrites all of q, whatever it held.
			dirty := httpcompat.AnnounceQuery{Port: 1, Left: 2, NumWant: 3, Key: 4}
			if err := httpcompat.ParseAnnounce("ip=1.2.3.4&ipv6=::1", &dirty); err == nil {
				t.Fatal("ParseAnnounce without info_hash = nil error")
			}
			if err := httpcompat.ParseAnnounce(query, &dirty); err != nil || dirty != q {
				t.Errorf("ParseAnnounce(%q) over a used AnnounceQuery = %+v, %v; over a zero one %+v", query, dirty, err, q)
			}
			// Compare the exported fields (IPParams above covers the rest).
			gv, wv := reflect.ValueOf(q), reflect.ValueOf(want)
			for i := range gv.NumField() {
				if f := gv.Type().Field(i); f.IsExported() && !gv.Field(i).Equal(wv.Field(i)) {
					t.Errorf("ParseAnnounce(%q).%s = %v, reference %v", query, f.Name, gv.Field(i), wv.Field(i))
				}
			}
		}

		const limit = 4
		hashes, err := httpcompat.ParseScrape(query, nil, limit)
		wantHashes, ok := refScrape(query, limit)
		if ok != (err == nil) {
			t.Fatalf("ParseScrape(%q) error = %v, reference says ok = %v", query, err, ok)
		}
		if err != nil {
			wantQueryError(t, err)
		} else if !slices.Equal(hashes, wantHashes) {
			t.Errorf("ParseScrape(%q) = %x, reference %x", query, hashes, wantHashes)
		}
	})
}

// fuzzServer is one handler for every FuzzHTTPServe input: it trusts the
// proxies at 192.0.2.0/24 and honours ip parameters, to reach every path.
var fuzzServer = sync.OnceValues(func() (*httpcompat.Server, error) {
	table, err := peertable.New(peertable.Config{})
	if err != nil {
		return nil, err
	}
	core, err := tracker.New(tracker.Config{}, table)
	if err != nil {
		return nil, err
	}
	return httpcompat.Listen(httpcompat.Config{
		Addrs:          []string{"127.0.0.1:0"}, // never served: ServeHTTP is called directly
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		AllowIPParam:   true,
		MaxScrape:      4,
		Logger:         slog.New(slog.DiscardHandler),
	}, core)
})

// FuzzHTTPServe runs whole requests through the handler: the request
// target (path and query, as the request line carries it), the
// connection's peer, and an X-Forwarded-For header. Every reply must be a
// 404, a 405 or a well-formed bencoded dictionary of the right shape.
func FuzzHTTPServe(f *testing.F) {
	ih := "%8A%1B%00%FFabcdefghijklmnop"
	announce := "?info_hash=" + ih + "&peer_id=-qB4650-k8hj0wgej6ch&port=51413&left=1&numwant=3"
	f.Add("/announce"+announce, "192.0.2.1:1000", "")
	f.Add("/announce"+announce+"&compact=0", "[2001:db8::1]:1000", "")
	f.Add("/pk/announce"+announce+"&ip=198.51.100.7", "192.0.2.1:1000", "2001:db8::2, 192.0.2.9")
	f.Add("/scrape?info_hash="+ih+"&info_hash="+ih, "198.51.100.1:1", "10.0.0.1")
	f.Add("/scrape", "192.0.2.1:1000", "garbage")
	f.Add("/announce/x", "192.0.2.1:1000", "")
	f.Fuzz(func(t *testing.T, target, remote, forwarded string) {
		s, err := fuzzServer()
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(target, "/") {
			return // the server (Serve's parser, or net/http before ServeHTTP) answers 400
		}
		ap, err := netip.ParseAddrPort(remote)
		if err != nil || !ap.Addr().IsValid() || ap.Addr().Zone() != "" {
			return // both servers always give a socket's address
		}
		r := &http.Request{Method: "GET", URL: u, RequestURI: target, RemoteAddr: ap.String(), Header: http.Header{}}
		if forwarded != "" {
			r.Header.Set("X-Forwarded-For", forwarded)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusNotFound:
			return
		case http.StatusOK:
		default:
			t.Fatalf("GET %q: status %d", target, w.Code)
		}
		v, err := bencodetest.Decode(w.Body.Bytes())
		if err != nil {
			t.Fatalf("GET %q: reply %q: %v", target, w.Body.Bytes(), err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("GET %q: reply %q is not a dictionary", target, w.Body.Bytes())
		}
		if reason, ok := m["failure reason"].(string); ok {
			if reason == "" || len(m) != 1 {
				t.Fatalf("GET %q: refusal %q", target, w.Body.Bytes())
			}
			return
		}
		if strings.HasSuffix(u.Path, "/scrape") {
			files, ok := m["files"].(map[string]any)
			if !ok || len(files) == 0 || len(m) != 1 {
				t.Fatalf("GET %q: scrape reply %q", target, w.Body.Bytes())
			}
			for k := range files {
				if len(k) != 20 {
					t.Fatalf("GET %q: scrape key %x", target, k)
				}
			}
			return
		}
		checkAnnounceReply(t, target, m)
	})
}

// checkAnnounceReply checks the shape of a successful announce reply:
// peers of one family only, whole entries, and an external ip.
func checkAnnounceReply(t *testing.T, target string, m map[string]any) {
	t.Helper()
	for _, k := range []string{"complete", "incomplete", "downloaded", "interval", "min interval"} {
		if _, ok := m[k].(int64); !ok {
			t.Fatalf("GET %q: %s = %v", target, k, m[k])
		}
	}
	ext, _ := m["external ip"].(string)
	if len(ext) != 4 && len(ext) != 16 {
		t.Fatalf("GET %q: external ip %x", target, ext)
	}
	switch peers := m["peers"].(type) {
	case []any:
		for _, p := range peers {
			d, _ := p.(map[string]any)
			a, err := netip.ParseAddr(fmtString(d["ip"]))
			if err != nil || a.Is4() != (len(ext) == 4) || len(d) != 2 {
				t.Fatalf("GET %q: dictionary peer %v for a client at %x", target, p, ext)
			}
		}
	case string:
		peers6, has6 := m["peers6"].(string)
		switch {
		case len(ext) == 4 && (has6 || len(peers)%6 != 0):
			t.Fatalf("GET %q: IPv4 client got peers %x, peers6 %x", target, peers, peers6)
		case len(ext) == 16 && (peers != "" || !has6 || len(peers6)%18 != 0):
			t.Fatalf("GET %q: IPv6 client got peers %x, peers6 %x", target, peers, peers6)
		}
	default:
		t.Fatalf("GET %q: peers %v", target, m["peers"])
	}
}

func fmtString(v any) string {
	s, _ := v.(string)
	return s
}

// FuzzBencode builds a value from the input, encodes it with httpcompat's
// Append functions, and decodes it with bencodetest: the two must agree.
func FuzzBencode(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{4, 3, 0, 1, 2, 3, 4, 5, 6, 7, 2, 5, 'h', 'e', 'l', 'l', 'o', 3, 0})
	f.Add([]byte{5, 3, 2, 1, 'b', 0, 1, 2, 3, 4, 5, 6, 7, 2, 1, 'a', 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 1, 'b', 3, 0})
	f.Add([]byte{4, 200, 4, 200, 4, 200, 4, 200, 5, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		g := valueGen{data: data}
		v, enc := g.value(nil, 0)
		got, err := bencodetest.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(%q) = %v, for %#v", enc, err, v)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("Decode(%q) = %#v, want %#v", enc, got, v)
		}
	})
}

// valueGen turns fuzz bytes into a value tree and its encoding.
type valueGen struct{ data []byte }

func (g *valueGen) byte() byte {
	if len(g.data) == 0 {
		return 0
	}
	b := g.data[0]
	g.data = g.data[1:]
	return b
}

func (g *valueGen) bytes(n int) []byte {
	n = min(n, len(g.data))
	b := g.data[:n]
	g.data = g.data[n:]
	return b
}

// value appends one value to dst and returns the value as bencodetest
// decodes it (int64, string, []any, map[string]any).
func (g *valueGen) value(dst []byte, depth int) (any, []byte) {
	op := g.byte() % 6
	if depth >= 8 && op >= 4 {
		op = 2
	}
	switch op {
	case 0: // signed integer
		var b [8]byte
		copy(b[:], g.bytes(8))
		v := int64(binary.LittleEndian.Uint64(b[:]))
		return v, httpcompat.AppendInt(dst, v)
	case 1: // unsigned integer, in the decoder's range
		var b [8]byte
		copy(b[:], g.bytes(8))
		v := binary.LittleEndian.Uint64(b[:]) >> 1
		return int64(v), httpcompat.AppendUint(dst, v)
	case 2:
		s := string(g.bytes(int(g.byte())))
		return s, httpcompat.AppendString(dst, s)
	case 3:
		b := g.bytes(int(g.byte()))
		return string(b), httpcompat.AppendBytes(dst, b)
	case 4:
		n := int(g.byte() % 16)
		list := []any{}
		dst = append(dst, 'l')
		for range n {
			var v any
			v, dst = g.value(dst, depth+1)
			list = append(list, v)
		}
		return list, append(dst, 'e')
	default:
		n := int(g.byte() % 16)
		keys := make([]string, 0, n)
		for range n {
			keys = append(keys, string(g.bytes(int(g.byte()%24))))
		}
		sort.Strings(keys) // bencoding wants sorted, unique keys
		keys = slices.Compact(keys)
		dict := map[string]any{}
		dst = append(dst, 'd')
		for _, k := range keys {
			dst = httpcompat.AppendString(dst, k)
			var v any
			v, dst = g.value(dst, depth+1)
			dict[k] = v
		}
		return dict, append(dst, 'e')
	}
}
