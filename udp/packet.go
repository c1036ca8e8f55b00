package udp

import (
	"encoding/binary"

	"github.com/chihaya/chihaya/peertable"
)

// Every request starts with the same 16 bytes (BEP 15); integers are
// big-endian.
//
//	off len field
//	  0   8 connection_id (connect: protocol_id 0x41727101980)
//	  8   4 action (0 connect, 1 announce, 2 scrape)
//	 12   4 transaction_id
const headerLen = 16

const protocolID = 0x41727101980

// Actions, at offset 8 of a request and offset 0 of a reply.
const (
	actionConnect  = 0
	actionAnnounce = 1
	actionScrape   = 2
	actionError    = 3
)

// Connect request: just the header, with the protocol ID as connection
// ID. Connect reply:
//
//	off len field
//	  0   4 action (0)             4  4 transaction_id
//	  8   8 connection_id
const (
	connectLen      = headerLen
	connectReplyLen = 16
)

// Announce request (BEP 15); the same layout for IPv4 and IPv6.
//
//	off len field
//	  0   8 connection_id          8  4 action (1)
//	 12   4 transaction_id        16 20 info_hash
//	 36  20 peer_id               56 24 downloaded, left, uploaded
//	 80   4 event                 84  4 ip (0 = sender)
//	 88   4 key                   92  4 num_want (-1 = default)
//	 96   2 port                  98  … BEP 41 options
//
// Announce reply, followed by compact peers of the requester's family
// (6 bytes each for IPv4, 18 for IPv6):
//
//	off len field
//	  0   4 action (1)             4  4 transaction_id
//	  8   4 interval              12  4 leechers
//	 16   4 seeders               20  … peers
const (
	announceLen      = 98
	announceReplyLen = 20
)

// BEP 41 options follow the announce body until the end of the packet.
// Types 0 and 1 are a single byte; every other type is followed by a
// length byte and that many bytes of data:
//
//	0x0             end of options; the rest of the packet is ignored
//	0x1             no operation (padding)
//	0x2 len data…   URL data: path and query of the announce URL, split
//	                into as many options as it takes and concatenated
//
// Options of other types are skipped. An option cut short by the end of
// the packet is ignored, like any other trailing bytes: BEP 15 tells
// trackers not to assume a packet's size.
const (
	optEnd     = 0x0
	optNOP     = 0x1
	optURLData = 0x2
)

// MaxURLData is the most BEP 41 URL data an announce may carry, all its
// URL data options concatenated. It is generous for a path with a
// passkey and a query; more is refused with an error reply rather than
// cut, so that a passkey is never silently truncated.
const MaxURLData = 1024

// Scrape request: the header, then up to MaxScrapeInfoHashes info hashes
// of 20 bytes each. Scrape reply: the action and transaction ID, then for
// each info hash in request order:
//
//	off len field
//	  0   4 seeders                4  4 completed
//	  8   4 leechers
const (
	scrapeReplyLen     = 8
	scrapeReplyHashLen = 12
)

// MaxScrapeInfoHashes is the most info hashes one scrape may ask about,
// as many as fit a 1500-byte packet (BEP 15 says "about 74"). A request
// for more gets an error reply. Bytes after the last whole info hash are
// ignored.
const MaxScrapeInfoHashes = 74

// Error reply: the action (3) and transaction ID, then a message in
// UTF-8 filling the rest of the packet.
const errorReplyLen = 8

// maxRequestLen is the largest request read whole. Anything longer is
// refused ("request too large"), so that a worker's receive buffers stay
// small; a full scrape (16 + 74*20 bytes) or an announce with the most
// URL data fits.
const maxRequestLen = 2048

// IP and UDP header sizes, used to fit replies into Config.MaxPacket.
const (
	udpHeaderLen  = 8
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
)

// A ParseError reports why a request was refused. Its text names the
// request and the fault, and is meant for the client: the Server sends
// it in a BEP 15 error reply when the request carried a valid connection
// ID. Parse functions return preallocated ParseErrors, so refusing a
// request does not allocate.
type ParseError struct {
	Request string // "connect", "announce", "scrape" or "request"
	Reason  string
	msg     string
}

func newParseError(request, reason string) *ParseError {
	return &ParseError{Request: request, Reason: reason, msg: request + ": " + reason}
}

func (e *ParseError) Error() string {
	if e.msg == "" {
		return e.Request + ": " + e.Reason
	}
	return e.msg
}

// Refusals, preallocated: a remote peer decides how often they happen.
var (
	errShortRequest    = newParseError("request", "shorter than 16 bytes")
	errRequestTooLarge = newParseError("request", "longer than 2048 bytes")
	errUnknownAction   = newParseError("request", "unknown action")
	errConnectProtocol = newParseError("connect", "wrong protocol ID")
	errConnectAction   = newParseError("connect", "action is not 0")
	errShortAnnounce   = newParseError("announce", "shorter than 98 bytes")
	errAnnounceAction  = newParseError("announce", "action is not 1")
	errAnnounceEvent   = newParseError("announce", "event out of range 0-3")
	errURLDataTooLong  = newParseError("announce", "BEP 41 URL data longer than 1024 bytes")
	errShortScrape     = newParseError("scrape", "no info hash")
	errScrapeAction    = newParseError("scrape", "action is not 2")
	errScrapeTooMany   = newParseError("scrape", "more than 74 info hashes")
)

// ConnectRequest is a BEP 15 connect request.
type ConnectRequest struct {
	TxID uint32
}

// ParseConnect parses a connect request. Bytes after the first 16 are
// ignored.
func ParseConnect(b []byte) (ConnectRequest, error) {
	if len(b) < connectLen {
		return ConnectRequest{}, errShortRequest
	}
	if binary.BigEndian.Uint64(b) != protocolID {
		return ConnectRequest{}, errConnectProtocol
	}
	if binary.BigEndian.Uint32(b[8:]) != actionConnect {
		return ConnectRequest{}, errConnectAction
	}
	return ConnectRequest{TxID: binary.BigEndian.Uint32(b[12:])}, nil
}

// AppendConnect appends the connect request r to dst, as a client sends
// it, and returns the extended buffer.
func AppendConnect(dst []byte, r ConnectRequest) []byte {
	dst = binary.BigEndian.AppendUint64(dst, protocolID)
	dst = binary.BigEndian.AppendUint32(dst, actionConnect)
	return binary.BigEndian.AppendUint32(dst, r.TxID)
}

// AnnounceRequest is a BEP 15 announce request with its BEP 41 URL data.
type AnnounceRequest struct {
	ConnID     uint64
	TxID       uint32
	InfoHash   peertable.InfoHash
	PeerID     [20]byte
	Downloaded uint64
	Left       uint64
	Uploaded   uint64
	Event      peertable.Event
	IP         [4]byte // an IPv4 address; all zeros means the sender's
	Key        uint32
	NumWant    int32 // negative means the tracker's default
	Port       uint16
	// URLData is the BEP 41 URL data, all URL data options concatenated;
	// empty when there were none. ParseAnnounce appends it to
	// URLData[:0], so a request reused with cap(URLData) >= MaxURLData
	// parses without allocating.
	URLData []byte
}

// ParseAnnounce parses an announce request into r, reusing r.URLData's
// storage. The event must be 0-3 and URL data at most MaxURLData bytes;
// any other value of a field is accepted, for the tracker to judge.
// The work done is linear in len(b), whatever the options say.
func ParseAnnounce(b []byte, r *AnnounceRequest) error {
	if len(b) < announceLen {
		return errShortAnnounce
	}
	if binary.BigEndian.Uint32(b[8:]) != actionAnnounce {
		return errAnnounceAction
	}
	ev := binary.BigEndian.Uint32(b[80:])
	if ev > uint32(peertable.EventStopped) {
		return errAnnounceEvent
	}
	urlData, err := parseOptions(b[announceLen:], r.URLData[:0])
	if err != nil {
		return err
	}
	*r = AnnounceRequest{
		ConnID:     binary.BigEndian.Uint64(b),
		TxID:       binary.BigEndian.Uint32(b[12:]),
		InfoHash:   peertable.InfoHash(b[16:36]),
		PeerID:     [20]byte(b[36:56]),
		Downloaded: binary.BigEndian.Uint64(b[56:]),
		Left:       binary.BigEndian.Uint64(b[64:]),
		Uploaded:   binary.BigEndian.Uint64(b[72:]),
		Event:      peertable.Event(ev),
		IP:         [4]byte(b[84:88]),
		Key:        binary.BigEndian.Uint32(b[88:]),
		NumWant:    int32(binary.BigEndian.Uint32(b[92:])),
		Port:       binary.BigEndian.Uint16(b[96:]),
		URLData:    urlData,
	}
	return nil
}

// parseOptions appends the URL data of the BEP 41 options in b to dst.
// Every iteration moves i forward by at least one byte, and no index is
// used before it is checked against len(b).
func parseOptions(b, dst []byte) ([]byte, error) {
	for i := 0; i < len(b); {
		switch typ := b[i]; typ {
		case optEnd:
			return dst, nil
		case optNOP:
			i++
		default:
			if len(b)-i < 2 {
				return dst, nil // a type without its length
			}
			n := int(b[i+1])
			data := b[i+2:]
			if len(data) < n {
				return dst, nil // data cut short by the end of the packet
			}
			if typ == optURLData {
				if len(dst)+n > MaxURLData {
					return dst, errURLDataTooLong
				}
				dst = append(dst, data[:n]...)
			}
			i += 2 + n
		}
	}
	return dst, nil
}

// AppendAnnounce appends the announce request r to dst, as a client sends
// it, and returns the extended buffer. URL data goes out as URL data
// options of up to 255 bytes each, without an end-of-options marker.
func AppendAnnounce(dst []byte, r *AnnounceRequest) []byte {
	dst = binary.BigEndian.AppendUint64(dst, r.ConnID)
	dst = binary.BigEndian.AppendUint32(dst, actionAnnounce)
	dst = binary.BigEndian.AppendUint32(dst, r.TxID)
	dst = append(dst, r.InfoHash[:]...)
	dst = append(dst, r.PeerID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, r.Downloaded)
	dst = binary.BigEndian.AppendUint64(dst, r.Left)
	dst = binary.BigEndian.AppendUint64(dst, r.Uploaded)
	dst = binary.BigEndian.AppendUint32(dst, uint32(r.Event))
	dst = append(dst, r.IP[:]...)
	dst = binary.BigEndian.AppendUint32(dst, r.Key)
	dst = binary.BigEndian.AppendUint32(dst, uint32(r.NumWant))
	dst = binary.BigEndian.AppendUint16(dst, r.Port)
	for rest := r.URLData; len(rest) > 0; {
		n := min(len(rest), 255)
		dst = append(dst, optURLData, byte(n))
		dst = append(dst, rest[:n]...)
		rest = rest[n:]
	}
	return dst
}

// ScrapeRequest is a BEP 15 scrape request.
type ScrapeRequest struct {
	ConnID uint64
	TxID   uint32
	// InfoHashes are the swarms asked about, at least one and at most
	// MaxScrapeInfoHashes. ParseScrape appends them to InfoHashes[:0], so
	// a request reused with enough capacity parses without allocating.
	InfoHashes []peertable.InfoHash
}

// ParseScrape parses a scrape request into r, reusing r.InfoHashes'
// storage.
func ParseScrape(b []byte, r *ScrapeRequest) error {
	if len(b) < headerLen+20 {
		return errShortScrape
	}
	if binary.BigEndian.Uint32(b[8:]) != actionScrape {
		return errScrapeAction
	}
	n := (len(b) - headerLen) / 20
	if n > MaxScrapeInfoHashes {
		return errScrapeTooMany
	}
	r.ConnID = binary.BigEndian.Uint64(b)
	r.TxID = binary.BigEndian.Uint32(b[12:])
	r.InfoHashes = r.InfoHashes[:0]
	for i := range n {
		off := headerLen + 20*i
		r.InfoHashes = append(r.InfoHashes, peertable.InfoHash(b[off:off+20]))
	}
	return nil
}

// AppendScrape appends the scrape request r to dst, as a client sends it,
// and returns the extended buffer.
func AppendScrape(dst []byte, r *ScrapeRequest) []byte {
	dst = binary.BigEndian.AppendUint64(dst, r.ConnID)
	dst = binary.BigEndian.AppendUint32(dst, actionScrape)
	dst = binary.BigEndian.AppendUint32(dst, r.TxID)
	for _, ih := range r.InfoHashes {
		dst = append(dst, ih[:]...)
	}
	return dst
}

// Reply encoders. They append to a worker's reply buffer, which always
// has room for the largest reply, so they never allocate.

func appendConnectReply(dst []byte, txID uint32, connID uint64) []byte {
	dst = binary.BigEndian.AppendUint32(dst, actionConnect)
	dst = binary.BigEndian.AppendUint32(dst, txID)
	return binary.BigEndian.AppendUint64(dst, connID)
}

// putAnnounceReply writes the announce reply header into b[:20]; the
// peers are already in place after it.
func putAnnounceReply(b []byte, txID, interval uint32, c peertable.Counts) {
	_ = b[announceReplyLen-1]
	binary.BigEndian.PutUint32(b[0:], actionAnnounce)
	binary.BigEndian.PutUint32(b[4:], txID)
	binary.BigEndian.PutUint32(b[8:], interval)
	binary.BigEndian.PutUint32(b[12:], c.Leechers)
	binary.BigEndian.PutUint32(b[16:], c.Seeders)
}

func appendScrapeReply(dst []byte, txID uint32) []byte {
	dst = binary.BigEndian.AppendUint32(dst, actionScrape)
	return binary.BigEndian.AppendUint32(dst, txID)
}

func appendScrapeCounts(dst []byte, c peertable.Counts) []byte {
	dst = binary.BigEndian.AppendUint32(dst, c.Seeders)
	dst = binary.BigEndian.AppendUint32(dst, c.Completed)
	return binary.BigEndian.AppendUint32(dst, c.Leechers)
}

// appendErrorReply appends an error reply with msg, cut to the room left
// in dst so that the reply never outgrows the buffer.
func appendErrorReply(dst []byte, txID uint32, msg string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, actionError)
	dst = binary.BigEndian.AppendUint32(dst, txID)
	if room := cap(dst) - len(dst); len(msg) > room {
		msg = msg[:room]
	}
	return append(dst, msg...)
}
