// Command chihaya-load drives a BEP 15 (UDP) tracker with many requests
// in flight and checks every reply it gets back.
//
// It opens -conns connected sockets; each keeps -window requests in
// flight, matched to replies by transaction ID, and sends and reads in
// batches (sendmmsg and recvmmsg on Linux). Requests are announces and
// scrapes (-scrape is the scrape fraction) of -torrents info hashes with
// Zipf popularity, from -peers distinct peers per socket. A request not
// answered within -timeout counts as lost; a reply that breaks BEP 15
// counts as invalid, by reason; error replies are counted with their
// text. Once a second a progress line goes to stderr; at the end a
// summary and a machine-readable RESULT line go to stdout.
//
// The info hashes depend only on -seed, so a tracker in whitelist mode
// can be given them: chihaya-load -print-hashes -torrents N > whitelist.
//
// -prefill N announces N distinct peers (event started) spread evenly
// over the torrents and exits. A tracker knows a peer by its address and
// announced port, and all of them come from one address, so a torrent
// can hold at most 65535 of them.
//
// -responder ADDR runs a trivial batched BEP 15 server instead, to
// measure the generator's own ceiling.
//
// The generator shares no code with the tracker's udp package: it has its
// own encoder and decoder, so that the two cannot agree by construction.
package main
