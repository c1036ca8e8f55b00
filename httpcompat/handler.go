package httpcompat

import (
	"bytes"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/chihaya/chihaya/internal/ratelimit"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// endpoint is what a request path asks for.
type endpoint uint8

const (
	notFound endpoint = iota
	announceEndpoint
	scrapeEndpoint
)

// route maps /announce, /scrape, /{passkey}/announce and /{passkey}/scrape
// to their endpoint; anything else is notFound.
func route(path string) endpoint {
	var ep endpoint
	var prefix string
	switch {
	case len(path) > maxPathLen:
		return notFound
	case strings.HasSuffix(path, "/announce"):
		ep, prefix = announceEndpoint, path[:len(path)-len("/announce")]
	case strings.HasSuffix(path, "/scrape"):
		ep, prefix = scrapeEndpoint, path[:len(path)-len("/scrape")]
	default:
		return notFound
	}
	if prefix == "" || len(prefix) > 1 && prefix[0] == '/' && strings.IndexByte(prefix[1:], '/') < 0 {
		return ep
	}
	return notFound
}

// A request is what the core needs of one HTTP request, whichever
// adapter read it: ServeHTTP fills it from an *http.Request, the
// connection loop (conn.go) from the bytes it parsed. Strings may alias
// the connection's read buffer: the core reads them only while it
// answers and keeps none of them.
type request struct {
	method   method
	path     string // decoded, as http.Request.URL.Path
	rawQuery string // undecoded, without the '?'
	remote   netip.AddrPort
	// realIP holds the values of Config.RealIPHeader, in order, one per
	// header line; acceptEncoding those of Accept-Encoding.
	realIP         []string
	acceptEncoding []string
	start          time.Time // when answering began, for Stats latency
}

// method is a request's method as far as the core cares.
type method uint8

const (
	methodOther method = iota
	methodGet
	methodHead
)

// A replyWriter sends the core's reply the way its adapter speaks HTTP.
// Every reply has Content-Type text/plain; a 405 also has Allow: GET,
// HEAD. The body of a reply to HEAD is dropped by the writer, so the core
// writes the same bytes for HEAD as for GET.
type replyWriter interface {
	// reply sends a whole reply: status and body.
	reply(status int, body []byte)
	// startFull sends the head of a 200 full scrape reply (with Vary:
	// Accept-Encoding) of length bytes, gzip-encoded if gz; Write then
	// sends its body. An error from Write means the client is gone.
	startFull(length int, gz bool)
	io.Writer
}

// Bodies of the HTTP errors the core answers.
var (
	notFoundBody   = []byte("404 page not found\n")
	notAllowedBody = []byte("405 method not allowed\n")
)

// serve answers v on w: route, method, client address, rate limit, then
// announce, scrape or full scrape. It counts the request in s.stats and
// times it from v.start until its reply is handed to w. x is the caller's
// scratch; serve leaves x.out pointing at the reply's buffer.
func (s *Server) serve(x *exchange, v *request, w replyWriter) {
	ep := route(v.path)
	if ep == notFound {
		s.stats.notFound.Add(1)
		w.reply(404, notFoundBody)
		return
	}
	if v.method == methodOther {
		s.stats.notFound.Add(1)
		w.reply(405, notAllowedBody)
		return
	}
	out, a := s.handle(x, ep, v, w)
	if out != nil {
		x.out = out
		w.reply(200, out)
	}
	s.stats.observe(a, time.Since(v.start))
}

// handle answers v, routed to ep, into x.out and returns it, or returns
// nil when it has written the reply to w itself (a full scrape), along
// with the action it took v for. It counts the request in s.stats.
func (s *Server) handle(x *exchange, ep endpoint, v *request, w replyWriter) ([]byte, action) {
	a := actionAnnounce
	if ep == scrapeEndpoint {
		a = actionScrape
	}
	client, err := s.clientAddr(v)
	if err != nil {
		out := appendFailure(x.out[:0], err.Error(), 0)
		s.stats.count(a, out)
		return out, a
	}
	var out []byte
	switch {
	case ep == scrapeEndpoint:
		if out = s.scrape(x, v.rawQuery); out == nil {
			a = actionFullScrape
			out = s.serveFull(x, w, v, client)
		}
	default:
		if ok, wait := s.allow(client); !ok {
			out = s.refuseRate(x.out[:0], wait)
			break
		}
		n := copy(x.path[:], v.path) // route checked the length
		out = s.announce(x, client, x.path[:n], v.rawQuery)
	}
	s.stats.count(a, out)
	return out, a
}

// limitBuckets is the size of each row of the announce rate limit's
// table: two rows of 16,384 int64s, 256 KiB.
const limitBuckets = 1 << 14

// rateLimitedText is the failure reason for an announce over
// Config.AnnounceRate.
const rateLimitedText = "rate limited"

// allow reports whether client may announce now under
// Config.AnnounceRate, charging it if so; if not, wait is how long until
// it may.
func (s *Server) allow(client netip.Addr) (ok bool, wait time.Duration) {
	l := s.limit.Load()
	if l == nil {
		return true, 0
	}
	k := ratelimit.Key(client)
	now := s.now().UnixNano()
	s.limitMu.Lock()
	ok, wait = l.Allow(k, now)
	s.limitMu.Unlock()
	return ok, wait
}

// refuseRate appends the refusal of an announce over the limit, with a
// "retry in" of the minutes to wait, rounded up: BEP 31 counts in
// minutes, so a client that should wait less than one is told one (and
// one that comes back sooner is refused again).
func (s *Server) refuseRate(dst []byte, wait time.Duration) []byte {
	s.stats.rateLimited.Add(1)
	return appendFailure(dst, rateLimitedText, int((wait+time.Minute-1)/time.Minute))
}

// announce answers one announce from client into x.out. urlData is the
// request path.
func (s *Server) announce(x *exchange, client netip.Addr, urlData []byte, rawQuery string) []byte {
	q := &x.query
	if err := ParseAnnounce(rawQuery, q); err != nil {
		return appendFailure(x.out[:0], err.Error(), 0)
	}
	pol := s.policy.Load()
	addr := client
	if pol.AllowIPParam {
		addr = q.addrFor(client)
	}
	x.req = tracker.AnnounceRequest{
		InfoHash:   q.InfoHash,
		PeerID:     q.PeerID,
		Addr:       netip.AddrPortFrom(addr, q.Port),
		Uploaded:   q.Uploaded,
		Downloaded: q.Downloaded,
		Left:       q.Left,
		Event:      q.Event,
		NumWant:    q.NumWant, // as sent: the tracker resolves it
		Key:        q.Key,
		URLData:    urlData,
		// No MaxPeers: a reply over TCP has room for whatever the
		// tracker's MaxNumWant allows.
	}
	// A reload may have raised MaxNumWant since x.peers was made: make
	// it large enough once, rather than letting the table's appends grow
	// it step by step.
	if need, _ := s.bufLens(); cap(x.peers) < need {
		x.peers = make([]byte, 0, need)
	}
	res, err := s.t.Announce(&x.req, x.peers[:0])
	x.req.URLData = nil
	if err != nil {
		return s.appendError(x.out[:0], err)
	}
	x.peers = res.Peers[:0] // keep the buffer if the tracker grew it
	return s.appendAnnounce(x.out[:0], client, q.Compact, !pol.NoExternalIP, &res)
}

// addrFor returns the address given by an ip, ipv4 or ipv6 parameter of
// client's family, preferring the family's own parameter, or client.
func (q *AnnounceQuery) addrFor(client netip.Addr) netip.Addr {
	ip, own, ipv6 := q.IPParams()
	if client.Is6() {
		own = ipv6
	}
	for _, a := range [2]netip.Addr{own, ip} {
		// A multicast, broadcast or loopback address would send peers
		// where the announcer cannot receive them.
		if a.IsGlobalUnicast() && a.Is4() == client.Is4() {
			return a
		}
	}
	return client
}

// Announce reply (BEP 3, 7, 23, 24), keys in the sorted order bencoding
// requires:
//
//	d
//	  8:complete      i<seeders>e
//	  10:downloaded   i<completed>e
//	  11:external ip  <4 or 16 raw bytes>      unless NoExternalIP
//	  10:incomplete   i<leechers>e
//	  8:interval      i<seconds>e
//	  12:min interval i<seconds>e
//	  5:peers         <6 bytes per IPv4 peer>  compact; empty for IPv6 clients
//	  6:peers6        <18 bytes per IPv6 peer> compact, IPv6 clients only
//	e
//
// With compact=0, peers is a list of d2:ip<text>4:porti<port>ee (BEP 3's
// dictionary model) for either family and peers6 is left out. The table
// keeps no peer IDs (they would cost 20 bytes a peer), so the entries have
// no "peer id", as if every client had sent no_peer_id.
func (s *Server) appendAnnounce(dst []byte, client netip.Addr, compact, externalIP bool, res *tracker.AnnounceResponse) []byte {
	dst = append(dst, 'd')
	dst = AppendString(dst, "complete")
	dst = AppendUint(dst, uint64(res.Counts.Seeders))
	dst = AppendString(dst, "downloaded")
	dst = AppendUint(dst, uint64(res.Counts.Completed))
	if externalIP {
		dst = AppendString(dst, "external ip")
		if client.Is4() {
			a := client.As4()
			dst = AppendBytes(dst, a[:])
		} else {
			a := client.As16()
			dst = AppendBytes(dst, a[:])
		}
	}
	dst = AppendString(dst, "incomplete")
	dst = AppendUint(dst, uint64(res.Counts.Leechers))
	dst = AppendString(dst, "interval")
	dst = AppendUint(dst, uint64(res.Interval))
	dst = AppendString(dst, "min interval")
	dst = AppendUint(dst, uint64(res.MinInterval))
	dst = AppendString(dst, "peers")
	switch {
	case !compact:
		dst = appendPeerDicts(dst, client.Is4(), res.Peers)
	case client.Is4():
		dst = AppendBytes(dst, res.Peers)
	default:
		dst = AppendString(dst, "")
		dst = AppendString(dst, "peers6")
		dst = AppendBytes(dst, res.Peers)
	}
	return append(dst, 'e')
}

// appendPeerDicts appends compact peers (IPv4 when v4, else IPv6) as a
// list of dictionaries with "ip" and "port".
func appendPeerDicts(dst []byte, v4 bool, peers []byte) []byte {
	size := peertable.PeerLenV6
	if v4 {
		size = peertable.PeerLenV4
	}
	dst = append(dst, 'l')
	for ; len(peers) >= size; peers = peers[size:] {
		var a netip.Addr
		if v4 {
			a = netip.AddrFrom4([4]byte(peers))
		} else {
			a = netip.AddrFrom16([16]byte(peers))
		}
		var text [len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")]byte
		dst = append(dst, 'd')
		dst = AppendString(dst, "ip")
		dst = AppendBytes(dst, a.AppendTo(text[:0]))
		dst = AppendString(dst, "port")
		dst = AppendUint(dst, uint64(peers[size-2])<<8|uint64(peers[size-1]))
		dst = append(dst, 'e')
	}
	return append(dst, 'e')
}

// Scrape reply (BEP 48), info hashes sorted and each once:
//
//	d 5:files d
//	    20:<info hash> d 8:completei<n>e 10:downloadedi<n>e 10:incompletei<n>e e
//	    …
//	e e
//
// scrape returns the reply in x.out, or nil for a full scrape (no
// info_hash) when Config.FullScrape is on: the caller answers that.
func (s *Server) scrape(x *exchange, rawQuery string) []byte {
	pol := s.policy.Load()
	hashes, err := ParseScrape(rawQuery, x.hashes[:0], pol.MaxScrape)
	switch {
	case err == ErrTooManyInfoHashes:
		return appendFailure(x.out[:0], pol.tooMany, 0)
	case err != nil:
		return appendFailure(x.out[:0], err.Error(), 0)
	case len(hashes) == 0 && s.full != nil:
		return nil
	case len(hashes) == 0:
		return appendFailure(x.out[:0], errNoScrapeHash.Error(), 0)
	}
	slices.SortFunc(hashes, func(a, b peertable.InfoHash) int { return bytes.Compare(a[:], b[:]) })
	hashes = slices.Compact(hashes)
	dst := append(x.out[:0], 'd')
	dst = AppendString(dst, "files")
	dst = append(dst, 'd')
	for i := range hashes {
		dst = appendFile(dst, &hashes[i], s.t.Scrape(hashes[i]))
	}
	return append(dst, 'e', 'e')
}

// appendFile appends one entry of a scrape reply's "files": the info hash
// as a key, then its counts.
func appendFile(dst []byte, ih *peertable.InfoHash, c peertable.Counts) []byte {
	dst = AppendBytes(dst, ih[:])
	dst = append(dst, 'd')
	dst = AppendString(dst, "complete")
	dst = AppendUint(dst, uint64(c.Seeders))
	dst = AppendString(dst, "downloaded")
	dst = AppendUint(dst, uint64(c.Completed))
	dst = AppendString(dst, "incomplete")
	dst = AppendUint(dst, uint64(c.Leechers))
	return append(dst, 'e')
}

// retryNever is the retryIn of a refusal the client must not retry.
const retryNever = -1

// appendFailure appends a refusal: BEP 3's "failure reason" and, when
// retryIn is not 0, BEP 31's "retry in", in minutes or "never" for
// retryNever.
//
//	d 14:failure reason <len>:<reason> [8:retry in i<minutes>e | 5:never] e
func appendFailure(dst []byte, reason string, retryIn int) []byte {
	dst = append(dst, 'd')
	dst = AppendString(dst, "failure reason")
	dst = AppendString(dst, reason)
	switch {
	case retryIn == retryNever:
		dst = AppendString(dst, "retry in")
		dst = AppendString(dst, "never")
	case retryIn > 0:
		dst = AppendString(dst, "retry in")
		dst = AppendInt(dst, int64(retryIn))
	}
	return append(dst, 'e')
}

// appendError appends err from the tracker as a refusal: the text of a
// *tracker.ClientError, or "internal error" with the detail logged.
func (s *Server) appendError(dst []byte, err error) []byte {
	if ce, ok := err.(*tracker.ClientError); ok {
		return appendFailure(dst, ce.Error(), 0)
	}
	s.stats.internal.Add(1)
	s.log.Error("announce failed", "proto", "http", "err", err)
	return appendFailure(dst, "internal error", 0)
}

// errForwarded refuses a request whose trusted proxy names a client
// address that does not parse.
var errForwarded = &QueryError{"", "invalid forwarded client address"}

// errRemoteAddr should not happen: both adapters give the peer's address.
var errRemoteAddr = &QueryError{"", "internal error"}

// clientAddr returns the client's address, unmapped: the connection's
// peer, or what a trusted proxy says in the real-IP header.
func (s *Server) clientAddr(v *request) (netip.Addr, error) {
	if !v.remote.IsValid() {
		return netip.Addr{}, errRemoteAddr
	}
	a := v.remote.Addr().Unmap()
	if !s.trusted(a) {
		return a, nil
	}
	vals := v.realIP
	if len(vals) == 0 {
		return a, nil // the proxy itself is the client
	}
	if !s.forwardedFor {
		fa, ok := parseForwarded(vals[len(vals)-1])
		if !ok {
			return netip.Addr{}, errForwarded
		}
		return fa, nil
	}
	// X-Forwarded-For: each proxy appends the address it got the request
	// from, and repeated headers are one list. Walk from the right past
	// our own proxies; the first other address is the client's. Anything
	// further left was written by the client and is not believed.
	for i := len(vals) - 1; i >= 0; i-- {
		for v := vals[i]; v != ""; {
			item := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				item, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			if strings.TrimSpace(item) == "" {
				continue
			}
			fa, ok := parseForwarded(item)
			if !ok {
				return netip.Addr{}, errForwarded
			}
			a = fa
			if !s.trusted(a) {
				return a, nil
			}
		}
	}
	return a, nil // every hop is ours: the leftmost is the client
}

// trusted reports whether a is in Config.TrustedProxies.
func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseForwarded parses one address of a real-IP header: an address, or
// an address and port as some proxies write it, unmapped and without a
// zone.
func parseForwarded(v string) (netip.Addr, bool) {
	v = strings.TrimSpace(v)
	a, err := netip.ParseAddr(v)
	if err != nil {
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
