package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

// e2ePython is Debian's interpreter, the one python3-libtorrent installs
// for; a python3 earlier on PATH (pyenv, a venv) cannot import it.
const e2ePython = "/usr/bin/python3"

// Bounds for one family's run. The clients give up first, so that their
// diagnosis (tracker errors, peer sources) reaches the log before the
// context kills them.
const (
	e2eBudget        = 35 * time.Second // whole subtest
	e2eSeederTimeout = 30 * time.Second // seeder: write torrent, announce, seed
	e2eLeechTimeout  = 25 * time.Second // leecher: announce, download
)

// TestE2ELibtorrent runs real BitTorrent clients against the daemon: a
// libtorrent seeder announces a fresh torrent over udp:// or http://, then a
// libtorrent leecher in another process announces and downloads it. Both
// clients listen on loopback only, with DHT, local service discovery, peer
// exchange, UPnP and NAT-PMP off, so they meet only through the tracker.
// The test also checks that the seeder's announce lands in its family's
// swarm and that both clients' "stopped" announces empty it again. The
// clients are testdata/e2e/client.py.
func TestE2ELibtorrent(t *testing.T) {
	requireLibtorrent(t)
	for _, proto := range []string{"udp", "http"} {
		for _, fam := range []struct{ name, host string }{
			{"v4", "127.0.0.1"},
			{"v6", "::1"},
		} {
			t.Run("proto="+proto+"/family="+fam.name, func(t *testing.T) {
				if fam.name == "v6" {
					requireLoopbackV6(t)
				}
				testE2ESwarm(t, proto, fam.host)
			})
		}
	}
}

// requireLibtorrent skips the test when Debian's python3 cannot import
// libtorrent, except under CI, where .ci/run must have installed it.
func requireLibtorrent(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e2ePython, "-c",
		"import libtorrent; print(libtorrent.__version__)").CombinedOutput()
	if err == nil {
		t.Logf("libtorrent %s", bytes.TrimSpace(out))
		return
	}
	msg := e2ePython + " cannot import libtorrent (" + err.Error() + "): " +
		"apt-get install python3-libtorrent to run this test"
	if os.Getenv("CI") != "" {
		t.Fatalf("%s\n%s", msg, out)
	}
	t.Skip(msg)
}

func requireLoopbackV6(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("IPv6 loopback unavailable: %v", err)
	}
	c.Close()
}

func testE2ESwarm(t *testing.T, proto, host string) {
	ctx, cancel := context.WithTimeout(t.Context(), e2eBudget)
	defer cancel()
	d, announce := startE2EDaemon(t, proto, host)
	script, err := filepath.Abs(filepath.Join("testdata", "e2e", "client.py"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	torrent := filepath.Join(dir, "e2e.torrent")
	seedDir, leechDir := filepath.Join(dir, "seed"), filepath.Join(dir, "leech")
	listen := net.JoinHostPort(host, "0")
	began := time.Now()

	seedLog := newClientLog(t, "seeder")
	seeder := e2eCommand(ctx, script, "seed", "--tracker", announce, "--listen", listen,
		"--torrent", torrent, "--data", seedDir, "--timeout", seconds(e2eSeederTimeout))
	seeder.Stdout, seeder.Stderr = seedLog, seedLog
	stdin, err := seeder.StdinPipe() // closing it tells the seeder to stop
	if err != nil {
		t.Fatal(err)
	}
	if err := seeder.Start(); err != nil {
		t.Fatalf("start seeder: %v", err)
	}
	var seedErr error
	seedDone := make(chan struct{})
	go func() { seedErr = seeder.Wait(); close(seedDone) }()
	// On an early return, kill the seeder and wait for its output to be
	// logged before the test ends.
	t.Cleanup(func() { cancel(); <-seedDone })

	select {
	case <-seedLog.ready:
	case <-seedDone:
		t.Fatalf("seeder exited before the tracker answered it: %v", seedErr)
	case <-ctx.Done():
		t.Fatalf("seeder did not announce within %v", e2eBudget)
	}
	t.Logf("seeder announced after %v", time.Since(began).Round(time.Millisecond))
	want := peertable.Stats{Swarms: 1, PeersV4: 1}
	if host != "127.0.0.1" {
		want = peertable.Stats{Swarms: 1, PeersV6: 1}
	}
	if got := d.table.Stats(); got != want {
		t.Errorf("after the seeder's announce, table.Stats() = %+v, want %+v", got, want)
	}

	leechLog := newClientLog(t, "leecher")
	leecher := e2eCommand(ctx, script, "leech", "--listen", listen,
		"--torrent", torrent, "--data", leechDir, "--timeout", seconds(e2eLeechTimeout))
	leecher.Stdout, leecher.Stderr = leechLog, leechLog
	if err := leecher.Run(); err != nil {
		t.Fatalf("leecher did not complete the download through %s: %v (its log is above)", announce, err)
	}
	t.Logf("leecher completed after %v", time.Since(began).Round(time.Millisecond))

	stdin.Close()
	<-seedDone
	if seedErr != nil {
		t.Errorf("seeder: %v (its log is above)", seedErr)
	}
	// Both clients send "stopped" on their way out, but libtorrent only
	// tries while its session shuts down (stop_tracker_timeout) and now
	// and then gives up before the datagram leaves, so a peer left behind
	// is reported, not failed: the tracker's handling of stopped is
	// tested in peertable, udp and httpcompat.
	if got := d.table.Stats(); got.PeersV4 != 0 || got.PeersV6 != 0 {
		t.Logf("note: after both clients stopped, table.Stats() = %+v; a stopped announce did not arrive", got)
	}
	// Whatever the clients sent, the tracker must not have turned any of
	// it away.
	if d.udp != nil {
		if st := d.udp.Stats(); st.BadConnIDs != 0 || st.Malformed != 0 || st.ErrorReplies != 0 {
			t.Errorf("udp server refused client requests: %+v", st)
		}
	}
	orig, err := os.ReadFile(filepath.Join(seedDir, "payload.bin"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(leechDir, "payload.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig) {
		t.Errorf("leecher's payload (%d bytes) differs from the seeder's (%d bytes)", len(got), len(orig))
	}
}

// startE2EDaemon runs the daemon with one address on host for proto (udp
// or http) until the test ends, and returns it with its announce URL.
// The other frontend is off: its default (port 6969 on every interface)
// would leave loopback and could collide with other tests.
func startE2EDaemon(t *testing.T, proto, host string) (*daemon, string) {
	t.Helper()
	var cfg Config
	addr := []string{net.JoinHostPort(host, "0")}
	switch proto {
	case "udp":
		cfg.UDP.Addrs, cfg.UDP.Workers = addr, 2
		cfg.HTTP.Disabled = true
	case "http":
		cfg.HTTP.Addrs = addr
		cfg.UDP.Disabled = true
	default:
		t.Fatalf("unknown protocol %q", proto)
	}
	cfg.Admin.Addr = "127.0.0.1:0"
	if err := cfg.check(); err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := start(cfg, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	addrs := d.udpAddrs()
	if proto == "http" {
		addrs = d.httpAddrs()
	}
	if len(addrs) != 1 || addrs[0].Port() == 0 {
		t.Fatalf("%s addresses = %v, want one bound address", proto, addrs)
	}
	runDaemon(t, d)
	return d, proto + "://" + addrs[0].String() + "/announce"
}

func e2eCommand(ctx context.Context, script string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e2ePython, append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	cmd.WaitDelay = 5 * time.Second // bounds Wait if the process is killed mid-write
	return cmd
}

func seconds(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }

// A clientLog logs a client's output line by line and notices the line
// with which the seeder says the tracker has answered it.
type clientLog struct {
	t     *testing.T
	name  string
	ready chan struct{} // closed at the first "ready:" line

	mu      sync.Mutex // guards the fields below
	partial []byte
	isReady bool
}

func newClientLog(t *testing.T, name string) *clientLog {
	return &clientLog{t: t, name: name, ready: make(chan struct{})}
}

func (l *clientLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		line, rest, ok := bytes.Cut(l.partial, []byte("\n"))
		if !ok {
			break
		}
		l.line(string(line))
		l.partial = rest
	}
	return len(p), nil
}

// line logs one line, which client.py starts with the seconds since it
// began ("  0.04s ready: ...").
func (l *clientLog) line(s string) {
	l.t.Logf("%s: %s", l.name, s)
	_, msg, _ := strings.Cut(strings.TrimSpace(s), " ")
	if strings.HasPrefix(msg, "ready:") && !l.isReady {
		l.isReady = true
		close(l.ready)
	}
}
