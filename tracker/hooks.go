package tracker

import "github.com/chihaya/chihaya/peertable"

// Hooks connect the core to what lies outside one process: the cache that
// mirrors swarms between processes (conncache) and, in private mode, the
// web application's rules and the statistics sent back to it (flush). All
// are optional; the zero Hooks is a public, single-process tracker.
//
// Every hook is called on the request path, by many goroutines at once. A
// hook must not block on I/O and should not allocate in steady state: it
// reads in-memory state and queues work for its own goroutines.
type Hooks struct {
	// Remote holds the peers that other processes announced, as the
	// mirror learned them. Replies are filled from the local table first
	// and then from Remote; counts are the sum of both. The core only
	// reads it.
	Remote *peertable.Table

	// Mirror hears of every announce that changed the local table.
	Mirror Mirror

	// Auth, when set, turns on private mode: every announce must pass it.
	Auth Authorizer

	// Accountant hears of every announce that Auth admitted and that was
	// applied, to turn reported totals into statistics.
	Accountant Accountant
}

// A Mirror publishes local changes to other processes. Changed is called
// after the change is in the local table, once per announce whose Change is
// not ChangeNone. It must be safe for concurrent use and must not block.
type Mirror interface {
	Changed(ih peertable.InfoHash, p peertable.Peer, ch peertable.Change, res peertable.Result)
}

// A Grant is what private mode knows about an admitted announce.
type Grant struct {
	User    uint32
	Torrent uint32
}

// An Authorizer decides private-mode announces. passkey is the first
// segment of the request's URL data ("/{passkey}/announce"), empty if
// there is none; it and req are valid only during the call. A refusal is a
// *ClientError whose text names the reason; it is sent to the client.
// Authorize must be safe for concurrent use and must not block.
type Authorizer interface {
	Authorize(passkey []byte, req *AnnounceRequest) (Grant, error)
}

// An Accountant turns admitted announces into statistics. Account is
// called after the announce was applied to the table; req is valid only
// during the call. Prefetch is called with the same arguments before the
// announce is applied, so that the Accountant can start loading what
// Account will need while the peer table works; it must not change
// anything Account sees, and may do nothing. Both must be safe for
// concurrent use and must not block.
type Accountant interface {
	Prefetch(g Grant, req *AnnounceRequest)
	Account(g Grant, req *AnnounceRequest)
}

// Passkey returns the first segment of a BEP 41 URL data or HTTP path:
// "/abc/announce" and "/abc" give "abc"; "/announce" gives "announce", which
// no authorizer knows. It does not allocate.
func Passkey(urlData []byte) []byte {
	if len(urlData) > 0 && urlData[0] == '/' {
		urlData = urlData[1:]
	}
	for i, c := range urlData {
		if c == '/' || c == '?' {
			return urlData[:i]
		}
	}
	return urlData
}
