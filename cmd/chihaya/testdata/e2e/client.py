#!/usr/bin/python3
"""A BitTorrent client for chihaya's end-to-end test (cmd/chihaya/e2e_test.go).

    client.py seed  --tracker URL --listen ADDR --torrent FILE --data DIR
    client.py leech --listen ADDR --torrent FILE --data DIR

The seeder writes random data into DIR, makes a private, v1-only torrent of
it announcing to URL, writes FILE, announces, prints a line starting with
"ready:" once the tracker has answered, and seeds until its stdin closes.
The leecher downloads FILE into DIR and exits once it has every piece and
the tracker has given it at least one peer.

Both clients listen on one loopback address and filter out every other
address, with DHT, local service discovery, peer exchange, UPnP and NAT-PMP
off and no web seeds: the tracker is the only way they can find each
other. Each must run in its own process, because libtorrent shares UDP
tracker connection IDs between the sessions of one process.

Either exits 0 on success and 1, after printing what libtorrent knows about
the torrent and its trackers, on failure or when --timeout runs out. Run it
with Debian's /usr/bin/python3 (apt-get install python3-libtorrent).
"""

import argparse
import os
import sys
import threading
import time

import libtorrent as lt

START = time.monotonic()


def say(*args):
    print("%6.2fs" % (time.monotonic() - START), *args, flush=True)


def session(listen):
    """Returns a session that talks to loopback addresses only."""
    mask = (lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.tracker_notification
            | lt.alert.category_t.connect_notification
            | lt.alert.category_t.ip_block_notification
            | lt.alert.category_t.storage_notification)
    settings = {
        "listen_interfaces": listen,
        "listen_system_port_fallback": False,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Both peers share one address; only their ports differ. Not needed
        # by libtorrent 2.0.8 with two peers, but cheap insurance for others.
        "allow_multiple_connections_per_ip": True,
        # Exit soon after sending the stopped event.
        "stop_tracker_timeout": 1,
        "alert_mask": int(mask),
        "user_agent": "chihaya-e2e/" + lt.__version__,
    }
    # No default plugins: that leaves out ut_pex (peer exchange) and
    # ut_metadata, so no peer can be learnt from another peer.
    ses = lt.session(settings, 0)
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1)
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    f.add_rule("127.0.0.0", "127.255.255.255", 0)
    f.add_rule("::1", "::1", 0)
    ses.set_ip_filter(f)  # applies to trackers too (apply_ip_filter_to_trackers)
    return ses


def add(ses, torrent, data):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = data
    # The default flags include paused and auto_managed: the queue would
    # start the torrent eventually, but we want it running now.
    atp.flags = ((atp.flags & ~lt.torrent_flags.auto_managed & ~lt.torrent_flags.paused)
                 | lt.torrent_flags.disable_dht
                 | lt.torrent_flags.disable_lsd
                 | lt.torrent_flags.disable_pex)
    return ses.add_torrent(atp)


def make_torrent(tracker, torrent, data, size, piece):
    os.makedirs(data, exist_ok=True)
    path = os.path.join(data, "payload.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, piece, flags=lt.create_torrent.v1_only)
    ct.add_tracker(tracker)
    ct.set_priv(True)
    ct.set_creator("chihaya e2e test")
    lt.set_piece_hashes(ct, data)
    tmp = torrent + ".tmp"
    with open(tmp, "wb") as f:
        f.write(lt.bencode(ct.generate()))
    os.replace(tmp, torrent)
    say("made %s: %d bytes in %d pieces of %d, tracker %s"
        % (torrent, size, ct.num_pieces(), piece, tracker))


class Client:
    """Pumps a session's alerts until a deadline, keeping what a diagnosis needs."""

    def __init__(self, ses, deadline):
        self.ses = ses
        self.deadline = deadline
        self.handle = None
        self.replies = 0      # tracker replies received
        self.peers_seen = 0   # most peers one reply carried
        self.tracker_errors = []
        self.stopping = False  # the "stopped" announce has been sent

    def pump(self, wait_ms=200):
        self.ses.wait_for_alert(wait_ms)
        for a in self.ses.pop_alerts():
            name = type(a).__name__
            say("alert %s: %s" % (name, a.message()))
            if isinstance(a, lt.tracker_announce_alert) and a.event == lt.event_t.stopped:
                self.stopping = True
            elif isinstance(a, lt.tracker_reply_alert):
                self.replies += 1
                self.peers_seen = max(self.peers_seen, a.num_peers)
            elif isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert,
                                lt.scrape_failed_alert)):
                self.tracker_errors.append("%s: %s" % (name, a.message()))
            elif isinstance(a, lt.listen_failed_alert):
                self.fail("cannot listen: " + a.message())
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                self.fail(a.message())

    def stop(self):
        """Removes the torrent, which announces "stopped", and closes the
        session, which waits up to stop_tracker_timeout for that announce."""
        t = time.monotonic()
        # libtorrent 2.0.8 sends no "stopped" while another announce (such
        # as the leecher's "completed") is in flight, so let that finish.
        while time.monotonic() - t < 2 and self.announcing():
            self.pump(50)
        self.ses.remove_torrent(self.handle)
        self.handle = None
        while time.monotonic() - t < 3 and not self.stopping:
            self.pump(50)
        self.ses = None  # the last reference: ~session runs here
        say("stopped in %.2fs" % (time.monotonic() - t))

    def announcing(self):
        for tr in self.handle.trackers():
            for ep in tr.get("endpoints", []):
                for ih in ep.get("info_hashes") or [ep]:
                    if ih.get("updating"):
                        return True
        return False

    def expired(self):
        return time.monotonic() >= self.deadline

    def fail(self, why):
        say("FAIL:", why)
        h = self.handle
        if h is not None and h.is_valid():
            s = h.status()
            say("status: state=%s progress=%.3f pieces=%d/%d peers=%d seeds=%d "
                "downloaded=%d uploaded=%d error=%r"
                % (s.state, s.progress, s.num_pieces, h.torrent_file().num_pieces(),
                   s.num_peers, s.num_seeds, s.total_payload_download,
                   s.total_payload_upload, s.errc.message() if s.errc.value() else ""))
            for t in h.trackers():
                say("tracker %s: verified=%s fails=%s message=%r"
                    % (t["url"], t.get("verified"), t.get("fails"), t.get("message")))
                for ep in t.get("endpoints", []):
                    say("  from %s: %s" % (ep.get("local_address"), endpoint_info(ep)))
            for p in h.get_peer_info():
                say("peer %s:%d source=%#x" % (p.ip[0], p.ip[1], p.source))
        say("tracker replies: %d, most peers in one: %d" % (self.replies, self.peers_seen))
        for e in self.tracker_errors:
            say("tracker error:", e)
        # os._exit, not sys.exit: the seeder's thread may be blocked reading
        # stdin, which stops the interpreter from shutting down cleanly.
        sys.stdout.flush()
        os._exit(1)


def endpoint_info(ep):
    """Formats one announce endpoint of handle.trackers()."""
    hashes = ep.get("info_hashes")  # libtorrent 2.0: [v1, v2]; 1.2: flat
    if hashes:
        ep = hashes[0]
    out = ["%s=%r" % (k, ep[k]) for k in ("message", "fails", "updating") if k in ep]
    err = ep.get("last_error")
    if err and err.get("value"):
        out.append("last_error=%s:%d" % (err.get("category"), err.get("value")))
    if "next_announce" in ep:  # seconds since the epoch
        out.append("next_announce_in=%ds" % (ep["next_announce"] - time.time()))
    return ", ".join(out)


def sources(flags):
    """Names the ways libtorrent learnt of a peer (peer_info.source)."""
    # libtorrent's peer_source_flags_t; Python lacks a name for "incoming".
    bits = (("tracker", 1), ("dht", 2), ("pex", 4), ("lsd", 8),
            ("resume_data", 16), ("incoming", 32))
    names = [name for name, bit in bits if flags & bit]
    return "+".join(names) or "none"


def seed(args):
    make_torrent(args.tracker, args.torrent, args.data, args.size, args.piece_size)
    c = Client(session(args.listen), time.monotonic() + args.timeout)
    c.handle = add(c.ses, args.torrent, args.data)
    closed = threading.Event()

    def wait_stdin():
        sys.stdin.buffer.read()
        closed.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    ready = False
    while not closed.is_set():
        if c.expired() and not ready:
            c.fail("no answer from the tracker within %gs" % args.timeout)
        if c.expired():
            c.fail("still seeding after %gs: stdin was not closed" % args.timeout)
        c.pump()
        s = c.handle.status()
        if not ready and c.replies > 0 and s.is_seeding:
            ready = True
            say("ready: seeding on port %d, announced to %s"
                % (c.ses.listen_port(), args.tracker))
    if not ready:
        c.fail("stdin closed before the tracker answered")
    s = c.handle.status()
    say("done: uploaded %d payload bytes" % s.total_payload_upload)
    c.stop()


def leech(args):
    c = Client(session(args.listen), time.monotonic() + args.timeout)
    c.handle = add(c.ses, args.torrent, args.data)
    n = c.handle.torrent_file().num_pieces()
    last = 0
    peers = set()
    while True:
        if c.expired():
            c.fail("download incomplete after %gs" % args.timeout)
        c.pump()
        s = c.handle.status()
        if time.monotonic() - last >= 1:
            last = time.monotonic()
            say("progress: state=%s %d/%d pieces, %d peers"
                % (s.state, s.num_pieces, n, s.num_peers))
        for p in c.handle.get_peer_info():
            if (p.ip, p.source) not in peers:
                peers.add((p.ip, p.source))
                say("peer %s port %d, source %s" % (p.ip[0], p.ip[1], sources(p.source)))
        if s.is_seeding and s.num_pieces == n:
            break
        if c.replies > 0 and c.peers_seen == 0:
            # The seeder announced before we started, and libtorrent will not
            # ask again for minutes (min_announce_interval): give up now.
            c.fail("the tracker answered with no peers, though the seeder had announced")
    if c.peers_seen == 0:
        c.fail("download complete, but no tracker reply carried a peer")
    say("complete: %d/%d pieces, %d payload bytes downloaded"
        % (s.num_pieces, n, s.total_payload_download))
    c.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=("seed", "leech"))
    p.add_argument("--tracker", help="announce URL (seed only), such as udp://127.0.0.1:6969/announce")
    p.add_argument("--listen", required=True, help='loopback listen address, "127.0.0.1:0" or "[::1]:0"')
    p.add_argument("--torrent", required=True, help="torrent file (seed: written, leech: read)")
    p.add_argument("--data", required=True, help="directory for the payload")
    p.add_argument("--timeout", type=float, default=30, help="seconds before giving up")
    p.add_argument("--size", type=int, default=2 << 20, help="payload bytes (seed only)")
    p.add_argument("--piece-size", type=int, default=32 << 10, help="piece bytes (seed only)")
    args = p.parse_args()
    say("libtorrent", lt.__version__, args.role, "listening on", args.listen)
    if args.role == "seed":
        if not args.tracker:
            p.error("seed needs --tracker")
        seed(args)
    else:
        leech(args)


if __name__ == "__main__":
    main()
