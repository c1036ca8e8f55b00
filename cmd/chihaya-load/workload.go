package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
)

// infoHashes returns n info hashes that depend only on seed: hash i is
// the first 20 bytes of SHA-256("chihaya-load", seed, i). A tracker in
// whitelist mode can be given the same list with -print-hashes.
func infoHashes(seed uint64, n int) [][20]byte {
	hs := make([][20]byte, n)
	var in [len("chihaya-load") + 16]byte
	copy(in[:], "chihaya-load")
	binary.BigEndian.PutUint64(in[12:], seed)
	for i := range hs {
		binary.BigEndian.PutUint64(in[20:], uint64(i))
		sum := sha256.Sum256(in[:])
		hs[i] = [20]byte(sum[:20])
	}
	return hs
}

// writeHashes writes hs to w in hex, one per line.
func writeHashes(w io.Writer, hs [][20]byte) error {
	line := make([]byte, 0, 41)
	for _, h := range hs {
		line = hex.AppendEncode(line[:0], h[:])
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return err
		}
	}
	return nil
}

// An eventMix picks announce events with fixed weights.
type eventMix struct {
	cum [4]uint32 // cumulative weights, indexed by event
}

// defaultEvents is a swarm in steady state: mostly periodic announces,
// joins and leaves in balance, a few completions.
const defaultEvents = "none=85,started=6,stopped=6,completed=3"

// parseEventMix reads weights like "none=85,started=6,stopped=6,completed=3".
// Events left out get weight zero.
func parseEventMix(s string) (eventMix, error) {
	var w [4]uint32
	for f := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			return eventMix{}, fmt.Errorf("event mix %q: want name=weight", f)
		}
		n, err := strconv.ParseUint(val, 10, 16)
		if err != nil {
			return eventMix{}, fmt.Errorf("event mix %q: %w", f, err)
		}
		switch name {
		case "none":
			w[eventNone] = uint32(n)
		case "completed":
			w[eventCompleted] = uint32(n)
		case "started":
			w[eventStarted] = uint32(n)
		case "stopped":
			w[eventStopped] = uint32(n)
		default:
			return eventMix{}, fmt.Errorf("event mix %q: unknown event %q", f, name)
		}
	}
	var m eventMix
	var sum uint32
	for i, v := range w {
		sum += v
		m.cum[i] = sum
	}
	if sum == 0 {
		return eventMix{}, fmt.Errorf("event mix %q: all weights are zero", s)
	}
	return m, nil
}

// pick returns an event drawn from m.
func (m *eventMix) pick(r *rand.Rand) uint32 {
	x := r.Uint32N(m.cum[3])
	for e, c := range m.cum {
		if x < c {
			return uint32(e)
		}
	}
	return eventNone
}

// A picker draws the requests of one worker in load mode. It is owned by
// that worker.
type picker struct {
	w      *workload
	r      *rand.Rand
	zipf   *rand.Zipf // nil means uniform popularity
	socket int
}

// workload is what every worker draws from; it is read-only once built,
// except for the prefill counters, which are atomic.
type workload struct {
	hashes       [][20]byte
	zipfS        float64
	scrapeFrac   float64
	scrapeHashes int
	events       eventMix
	numWant      int32
	peers        int // distinct announcing peers per socket

	// Prefill mode: jobs 0..prefill-1 each announce one distinct peer.
	prefill       int64
	nextJob       atomic.Int64
	prefillDone   atomic.Int64
	prefillFailed atomic.Int64
}

func newPicker(w *workload, seed uint64, socket int) *picker {
	p := &picker{
		w:      w,
		r:      rand.New(rand.NewPCG(seed, uint64(socket)+1)),
		socket: socket,
	}
	if w.zipfS > 1 && len(w.hashes) > 1 {
		p.zipf = rand.NewZipf(p.r, w.zipfS, 1, uint64(len(w.hashes)-1))
	}
	return p
}

// torrent returns the index of a torrent, popular ones more often.
func (p *picker) torrent() int {
	if p.zipf != nil {
		return int(p.zipf.Uint64())
	}
	return p.r.IntN(len(p.w.hashes))
}

// scrape reports whether the next request should be a scrape.
func (p *picker) scrape() bool {
	return p.w.scrapeFrac > 0 && p.r.Float64() < p.w.scrapeFrac
}

// announce fills a with a random peer of this socket announcing a random
// torrent. Peers of different sockets announce different ports, so that
// the tracker, which knows a peer by its address and announced port,
// sees sockets*peers distinct peers (up to the 65535 ports there are).
func (p *picker) announce(a *announce) {
	t := p.torrent()
	i := p.r.IntN(p.w.peers)
	id := uint64(p.socket)*uint64(p.w.peers) + uint64(i)
	a.InfoHash = p.w.hashes[t]
	setPeer(a, id)
	a.Event = p.w.events.pick(p.r)
	a.NumWant = p.w.numWant
	if a.Event == eventCompleted || (id+uint64(t))%3 == 0 {
		a.Left = 0
	} else {
		a.Left = 1 << 30
	}
}

// scrapeHashes appends the info hashes of one scrape to dst.
func (p *picker) scrapeHashes(dst [][20]byte) [][20]byte {
	for range p.w.scrapeHashes {
		dst = append(dst, p.w.hashes[p.torrent()])
	}
	return dst
}

// setPeer sets the identity fields of a for peer number id: its port,
// peer ID and key.
func setPeer(a *announce, id uint64) {
	a.Port = uint16(id%65535) + 1
	copy(a.PeerID[:], "-CL0001-")
	binary.BigEndian.PutUint32(a.PeerID[8:], 0x6c6f6164) // "load"
	binary.BigEndian.PutUint64(a.PeerID[12:], id)
	a.Key = uint32(id) ^ uint32(id>>32) ^ 0x9e3779b9
}

// prefillJob fills a with job j of a prefill: peer j joins torrent
// j mod T on port 1 + j/T, so that every job is a distinct peer as long
// as prefill/T stays within 65535 ports (checked by the caller).
func (w *workload) prefillJob(a *announce, j int64) {
	n := int64(len(w.hashes))
	t := j % n
	a.InfoHash = w.hashes[t]
	setPeer(a, uint64(j/n))
	binary.BigEndian.PutUint64(a.PeerID[12:], uint64(j)) // unique per job
	a.Key = uint32(j) ^ 0x9e3779b9
	a.Event = eventStarted
	a.NumWant = 0
	if j%3 == 0 {
		a.Left = 0
	} else {
		a.Left = 1 << 30
	}
}

// takeJob returns the next prefill job, or false when all are taken.
func (w *workload) takeJob() (int64, bool) {
	if w.nextJob.Load() >= w.prefill {
		return 0, false
	}
	j := w.nextJob.Add(1) - 1
	return j, j < w.prefill
}
