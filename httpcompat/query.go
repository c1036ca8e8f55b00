package httpcompat

import (
	"math"
	"net/netip"
	"strings"

	"github.com/chihaya/chihaya/peertable"
)

// The query scanner reads a raw query string in one pass, without building a
// map: it splits at '&', splits each item at its first '=', and
// percent-decodes names and values straight into fixed arrays or numbers.
// Decoding follows URL form encoding, as net/url.QueryUnescape does: %XX is
// the byte 0xXX and '+' is a space — also in info_hash and peer_id, so a
// client that means the byte 0x2B must send %2B (every client we know
// escapes every byte outside RFC 3986's unreserved set). Any other byte
// stands for itself. A '%' not followed by two hex digits anywhere in the
// query makes the whole query malformed. When a parameter is repeated, the
// first occurrence counts, as with url.Values.Get.

// A QueryError is an announce or scrape query that cannot be served. Its
// text is meant for the client (an HTTP "failure reason").
type QueryError struct {
	// Param is the parameter at fault, or "" for the query as a whole.
	Param string
	msg   string
}

func (e *QueryError) Error() string { return e.msg }

// Refusals of the query scanner. They are preallocated: a remote peer
// decides how often they happen.
var (
	ErrMalformedQuery    = &QueryError{"", "malformed query: bad percent-encoding"}
	ErrTooManyInfoHashes = &QueryError{"info_hash", "too many info_hash values"}

	errInfoHash     = &QueryError{"info_hash", "invalid info_hash: want 20 bytes"}
	errPeerID       = &QueryError{"peer_id", "invalid peer_id: want 20 bytes"}
	errPort         = &QueryError{"port", "invalid port"}
	errUploaded     = &QueryError{"uploaded", "invalid uploaded"}
	errDownloaded   = &QueryError{"downloaded", "invalid downloaded"}
	errLeft         = &QueryError{"left", "invalid left"}
	errNumWant      = &QueryError{"numwant", "invalid numwant"}
	errEvent        = &QueryError{"event", "invalid event"}
	errNoInfoHash   = &QueryError{"info_hash", "missing info_hash"}
	errNoPeerID     = &QueryError{"peer_id", "missing peer_id"}
	errNoPort       = &QueryError{"port", "missing port"}
	errNoLeft       = &QueryError{"left", "missing left"}
	errNoScrapeHash = &QueryError{"info_hash", "missing info_hash: full scrape is not allowed"}
)

// AnnounceQuery is an announce's query string (BEP 3, BEP 7, BEP 23),
// decoded. Parameters it has no field for (trackerid, no_peer_id,
// supportcrypto, …) are accepted and ignored.
type AnnounceQuery struct {
	InfoHash   peertable.InfoHash
	PeerID     [20]byte
	Port       uint16
	Uploaded   uint64 // 0 when absent
	Downloaded uint64 // 0 when absent
	Left       uint64
	// Event is EventNone for an absent or empty event and for BEP 21's
	// "paused".
	Event peertable.Event
	// NumWant is the number of peers asked for, at most math.MaxInt32, or
	// -1 when the client did not say or asked for a negative number.
	NumWant int
	// Key is the client's key as a number, best effort: 1 to 8 hex digits
	// (what most clients send) are read as hex, 9 or 10 decimal digits
	// that fit as decimal, and anything else is hashed (FNV-1a). A key
	// never makes a query fail.
	Key uint32
	// Compact is false only for compact=0.
	Compact bool

	// ipText holds the decoded ip, ipv4 and ipv6 parameters for
	// IPParams, which parses them only when a frontend asks: most never
	// do. Values too long to be an address are left empty.
	ipText [3][maxIPText]byte
	ipLen  [3]uint8
}

// maxIPText is the longest address and port without a zone:
// [ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535.
const maxIPText = 53

// IPParams returns the addresses of the ip, ipv4 and ipv6 parameters,
// which may also be written as address and port (BEP 7); the port is
// dropped and the address unmapped. A parameter that is absent or not an
// address gives the zero Addr: it is ignored, never refused.
func (q *AnnounceQuery) IPParams() (ip, ipv4, ipv6 netip.Addr) {
	return q.ipParam(0), q.ipParam(1), q.ipParam(2)
}

func (q *AnnounceQuery) ipParam(i int) netip.Addr {
	if q.ipLen[i] == 0 {
		return netip.Addr{}
	}
	s := string(q.ipText[i][:q.ipLen[i]])
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
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

// Bits for the parameters seen so far, so that the first occurrence wins.
const (
	seenInfoHash = 1 << iota
	seenPeerID
	seenPort
	seenUploaded
	seenDownloaded
	seenLeft
	seenEvent
	seenNumWant
	seenKey
	seenCompact
	seenIP
	seenIPv4
	seenIPv6
)

// maxNameLen is the longest parameter name the scanner knows; longer
// names are unknown whatever their bytes.
const maxNameLen = 10

// ParseAnnounce decodes the raw (still percent-encoded) query of an
// announce into q, overwriting all of it. It returns a *QueryError when a
// parameter is malformed or info_hash, peer_id, port or left is missing.
// It does not allocate.
func ParseAnnounce(rawQuery string, q *AnnounceQuery) error {
	*q = AnnounceQuery{NumWant: -1, Compact: true}
	var seen uint32
	for rest := rawQuery; rest != ""; {
		var item string
		item, rest, _ = strings.Cut(rest, "&")
		if item == "" {
			continue
		}
		rawName, val, _ := strings.Cut(item, "=")
		var nb [maxNameLen]byte
		n, ok := unescape(nb[:], rawName)
		if !ok {
			return ErrMalformedQuery
		}
		bit, known := 0, n <= len(nb)
		if known {
			bit = announceParam(nb[:n])
		}
		if bit == 0 || seen&uint32(bit) != 0 {
			if !validEscapes(val) {
				return ErrMalformedQuery
			}
			continue
		}
		seen |= uint32(bit)
		if err := q.set(bit, val); err != nil {
			return err
		}
	}
	switch {
	case seen&seenInfoHash == 0:
		return errNoInfoHash
	case seen&seenPeerID == 0:
		return errNoPeerID
	case seen&seenPort == 0:
		return errNoPort
	case seen&seenLeft == 0:
		return errNoLeft
	}
	return nil
}

// announceParam returns the seen bit of a known announce parameter, or 0.
func announceParam(name []byte) int {
	switch string(name) {
	case "info_hash":
		return seenInfoHash
	case "peer_id":
		return seenPeerID
	case "port":
		return seenPort
	case "uploaded":
		return seenUploaded
	case "downloaded":
		return seenDownloaded
	case "left":
		return seenLeft
	case "event":
		return seenEvent
	case "numwant":
		return seenNumWant
	case "key":
		return seenKey
	case "compact":
		return seenCompact
	case "ip":
		return seenIP
	case "ipv4":
		return seenIPv4
	case "ipv6":
		return seenIPv6
	}
	return 0
}

// set decodes the raw value val of the parameter bit into q.
func (q *AnnounceQuery) set(bit int, val string) error {
	var ok bool
	switch bit {
	case seenInfoHash:
		if n, ok := unescape(q.InfoHash[:], val); !ok {
			return ErrMalformedQuery
		} else if n != len(q.InfoHash) {
			return errInfoHash
		}
	case seenPeerID:
		if n, ok := unescape(q.PeerID[:], val); !ok {
			return ErrMalformedQuery
		} else if n != len(q.PeerID) {
			return errPeerID
		}
	case seenPort:
		var v uint64
		if v, ok = parseUint(val, math.MaxUint16); !ok {
			return numError(val, errPort)
		}
		q.Port = uint16(v)
	case seenUploaded:
		if q.Uploaded, ok = parseUint(val, math.MaxUint64); !ok {
			return numError(val, errUploaded)
		}
	case seenDownloaded:
		if q.Downloaded, ok = parseUint(val, math.MaxUint64); !ok {
			return numError(val, errDownloaded)
		}
	case seenLeft:
		if q.Left, ok = parseUint(val, math.MaxUint64); !ok {
			return numError(val, errLeft)
		}
	case seenNumWant:
		if q.NumWant, ok = parseNumWant(val); !ok {
			return numError(val, errNumWant)
		}
	case seenEvent:
		var b [len("completed")]byte
		n, ok := unescape(b[:], val)
		if !ok {
			return ErrMalformedQuery
		}
		if n > len(b) {
			return errEvent
		}
		if q.Event, ok = parseEvent(b[:n]); !ok {
			return errEvent
		}
	case seenKey:
		if q.Key, ok = parseKey(val); !ok {
			return ErrMalformedQuery
		}
	case seenCompact:
		var b [1]byte
		n, ok := unescape(b[:], val)
		if !ok {
			return ErrMalformedQuery
		}
		q.Compact = n != 1 || b[0] != '0'
	case seenIP, seenIPv4, seenIPv6:
		i := 0
		if bit == seenIPv4 {
			i = 1
		} else if bit == seenIPv6 {
			i = 2
		}
		n, ok := unescape(q.ipText[i][:], val)
		if !ok {
			return ErrMalformedQuery
		}
		if n <= maxIPText {
			q.ipLen[i] = uint8(n)
		}
	}
	return nil
}

// numError tells a bad number from bad percent-encoding, so that the
// client reads the same reason whichever parameter it comes across first.
func numError(val string, bad *QueryError) error {
	if !validEscapes(val) {
		return ErrMalformedQuery
	}
	return bad
}

func parseEvent(b []byte) (peertable.Event, bool) {
	switch string(b) {
	case "", "paused":
		return peertable.EventNone, true
	case "started":
		return peertable.EventStarted, true
	case "completed":
		return peertable.EventCompleted, true
	case "stopped":
		return peertable.EventStopped, true
	}
	return 0, false
}

// ParseScrape appends the info_hash parameters of a raw scrape query to
// dst in the order given and returns it; other parameters are ignored. It
// returns ErrTooManyInfoHashes when there are more than max, and another
// *QueryError when one is not 20 bytes or the query is malformed. A query
// without info_hash gives dst unchanged and no error. ParseScrape does not
// allocate when cap(dst) leaves room for max more.
func ParseScrape(rawQuery string, dst []peertable.InfoHash, max int) ([]peertable.InfoHash, error) {
	start := len(dst)
	for rest := rawQuery; rest != ""; {
		var item string
		item, rest, _ = strings.Cut(rest, "&")
		if item == "" {
			continue
		}
		rawName, val, _ := strings.Cut(item, "=")
		var nb [len("info_hash")]byte
		n, ok := unescape(nb[:], rawName)
		if !ok {
			return dst, ErrMalformedQuery
		}
		if n != len(nb) || string(nb[:]) != "info_hash" {
			if !validEscapes(val) {
				return dst, ErrMalformedQuery
			}
			continue
		}
		if len(dst)-start >= max {
			return dst, ErrTooManyInfoHashes
		}
		var ih peertable.InfoHash
		if n, ok := unescape(ih[:], val); !ok {
			return dst, ErrMalformedQuery
		} else if n != len(ih) {
			return dst, errInfoHash
		}
		dst = append(dst, ih)
	}
	return dst, nil
}

// unescapeAt decodes the byte of the form-encoded s that starts at i: '+'
// is a space and %XX the byte 0xXX. It returns the byte and the index of
// the next one, or ok false for a '%' not followed by two hex digits.
func unescapeAt(s string, i int) (c byte, next int, ok bool) {
	switch c = s[i]; c {
	case '+':
		return ' ', i + 1, true
	case '%':
		if i+2 >= len(s) {
			return 0, i, false
		}
		hi, lo := unhex(s[i+1]), unhex(s[i+2])
		if hi|lo > 0xf {
			return 0, i, false
		}
		return hi<<4 | lo, i + 3, true
	}
	return c, i + 1, true
}

// unhex returns the value of the hex digit c, or 0xff.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0xff
}

// unescape decodes s into dst and returns the decoded length n. When n
// exceeds len(dst), only the first len(dst) bytes were written. ok is
// false when s is malformed.
func unescape(dst []byte, s string) (n int, ok bool) {
	for i := 0; i < len(s); n++ {
		var c byte
		if c, i, ok = unescapeAt(s, i); !ok {
			return n, false
		}
		if n < len(dst) {
			dst[n] = c
		}
	}
	return n, true
}

// validEscapes reports whether every '%' in s starts a %XX escape.
func validEscapes(s string) bool {
	for i := strings.IndexByte(s, '%'); i >= 0; {
		if _, _, ok := unescapeAt(s, i); !ok {
			return false
		}
		j := strings.IndexByte(s[i+3:], '%')
		if j < 0 {
			break
		}
		i += 3 + j
	}
	return true
}

// parseUint decodes s and parses it as strconv.ParseUint(s, 10, 64) would,
// but fails above max too.
func parseUint(s string, max uint64) (v uint64, ok bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); {
		var c byte
		if c, i, ok = unescapeAt(s, i); !ok || c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (max-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// parseNumWant decodes s as a decimal integer with an optional sign, as
// strconv.ParseInt does, saturating instead of failing when it is out of
// range. Negative numbers mean the default (-1).
func parseNumWant(s string) (int, bool) {
	var v uint64
	neg, digits := false, 0
	for i := 0; i < len(s); {
		c, next, ok := unescapeAt(s, i)
		if !ok {
			return 0, false
		}
		switch {
		case i == 0 && (c == '-' || c == '+'):
			neg = c == '-'
		case c < '0' || c > '9':
			return 0, false
		default:
			v = min(v*10+uint64(c-'0'), math.MaxInt32)
			digits++
		}
		i = next
	}
	switch {
	case digits == 0:
		return 0, false
	case neg && v != 0:
		return -1, true
	}
	return int(v), true
}

// parseKey decodes a key (see AnnounceQuery.Key); ok is false only for
// bad percent-encoding.
func parseKey(s string) (key uint32, ok bool) {
	const (
		fnvOffset = 2166136261
		fnvPrime  = 16777619
	)
	var hex, dec uint64
	isHex, isDec := true, true
	fnv := uint32(fnvOffset)
	n := 0
	for i := 0; i < len(s); n++ {
		var c byte
		if c, i, ok = unescapeAt(s, i); !ok {
			return 0, false
		}
		fnv = (fnv ^ uint32(c)) * fnvPrime
		if h := unhex(c); h <= 0xf && n < 8 {
			hex = hex<<4 | uint64(h)
		} else {
			isHex = false
		}
		if c >= '0' && c <= '9' && n < 10 {
			dec = dec*10 + uint64(c-'0')
		} else {
			isDec = false
		}
	}
	switch {
	case isHex && n > 0 && n <= 8:
		return uint32(hex), true
	case isDec && n > 0 && dec <= math.MaxUint32:
		return uint32(dec), true
	}
	return fnv, true
}
