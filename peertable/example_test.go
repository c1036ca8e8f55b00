package peertable_test

import (
	"fmt"
	"net/netip"

	"github.com/chihaya/chihaya/peertable"
)

func Example() {
	t, err := peertable.New(peertable.Config{})
	if err != nil {
		panic(err)
	}
	ih := peertable.InfoHash{1}
	t.Announce(&peertable.Announce{
		InfoHash: ih,
		Addr:     netip.MustParseAddrPort("192.0.2.1:6881"),
		Event:    peertable.EventCompleted,
		Seeder:   true,
	}, nil)

	// A leecher asks for peers; the buffer is reused across announces.
	buf := make([]byte, 0, 50*peertable.PeerLenV4)
	peers, res := t.Announce(&peertable.Announce{
		InfoHash: ih,
		Addr:     netip.MustParseAddrPort("198.51.100.7:51413"),
		Event:    peertable.EventStarted,
		NumWant:  50,
	}, buf[:0])
	fmt.Printf("%d peer(s): % x\n", len(peers)/peertable.PeerLenV4, peers)
	fmt.Printf("%+v\n", res.Counts)
	fmt.Printf("%+v\n", t.Scrape(ih))
	// Output:
	// 1 peer(s): c0 00 02 01 1a e1
	// {Seeders:1 Leechers:1 Completed:1}
	// {Seeders:1 Leechers:1 Completed:1}
}
