//go:build ignore

// This program wrote the snapshot_v1_*.snap files beside it, which
// TestSnapshotV1Files loads. It builds only against the peertable of
// commit 5e5aab5, the last one with Config.Accounting and Announce.Aux:
// the files prove that snapshots written before those were removed,
// with Accounting on or off, still load. Do not regenerate them with
// later code; that would prove nothing. To rerun it, from a checkout of
// 5e5aab5 with this file copied into peertable/testdata:
//
//	go run peertable/testdata/snapshot_v1_gen.go -dir peertable/testdata
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/chihaya/chihaya/peertable"
)

func main() {
	dir := flag.String("dir", ".", "directory to write the files to")
	flag.Parse()
	for _, f := range []struct {
		name       string
		accounting bool
		withPeers  bool
	}{
		{"snapshot_v1_counts.snap", false, false},
		{"snapshot_v1_peers.snap", false, true},
		{"snapshot_v1_peers_accounting.snap", true, true},
	} {
		t, err := peertable.New(peertable.Config{Accounting: f.accounting})
		if err != nil {
			log.Fatal(err)
		}
		fill(t)
		var buf bytes.Buffer
		w, err := t.WriteSnapshot(&buf, f.withPeers)
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(*dir, f.name), buf.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %+v\n", f.name, w)
	}
}

// fill announces the swarms that TestSnapshotV1Files expects. Every
// announce carries a distinct Aux, which a table with Accounting keeps.
func fill(t *peertable.Table) {
	var user uint32
	announce := func(ih byte, addr string, ev peertable.Event, seeder bool) {
		user++
		t.Announce(&peertable.Announce{
			InfoHash: peertable.InfoHash{ih},
			Addr:     netip.MustParseAddrPort(addr),
			Event:    ev,
			Seeder:   seeder,
			Aux:      peertable.Aux{User: user, Uploaded: 1000 * uint64(user), Downloaded: 7 * uint64(user)},
		}, nil)
	}
	// Both families, one completion.
	announce(0xa1, "10.0.0.1:6881", peertable.EventCompleted, true)
	announce(0xa1, "10.0.0.2:6882", peertable.EventStarted, false)
	announce(0xa1, "10.0.0.3:6883", peertable.EventNone, false)
	announce(0xa1, "[2001:db8::a1]:6881", peertable.EventStarted, true)
	// Peers but no completed count: absent from a file without peers.
	announce(0xb2, "[2001:db8::1]:51413", peertable.EventStarted, true)
	announce(0xb2, "[2001:db8::2]:51413", peertable.EventStarted, false)
	announce(0xb2, "192.0.2.7:1", peertable.EventNone, false)
	// A completed count whose peers have stopped.
	announce(0xc3, "10.0.0.9:6881", peertable.EventCompleted, true)
	announce(0xc3, "10.0.0.9:6881", peertable.EventStopped, true)
	announce(0xc3, "10.0.0.10:6881", peertable.EventCompleted, true)
	announce(0xc3, "10.0.0.10:6881", peertable.EventStopped, true)
	// More peers than a set keeps without its key index (32).
	for i := 1; i <= 40; i++ {
		if i%4 == 0 {
			announce(0xd4, fmt.Sprintf("198.51.100.%d:6881", i), peertable.EventCompleted, true)
		} else {
			announce(0xd4, fmt.Sprintf("198.51.100.%d:6881", i), peertable.EventStarted, false)
		}
	}
}
