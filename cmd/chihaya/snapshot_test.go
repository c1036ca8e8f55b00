package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startDaemon starts a daemon on loopback (HTTP only) and returns its
// HTTP base URL and a function that stops it gracefully and reports
// run's error.
func startDaemon(t *testing.T, cfg Config, log *slog.Logger) (string, func() error) {
	t.Helper()
	if err := cfg.check(); err != nil {
		t.Fatalf("config: %v", err)
	}
	d, err := start(cfg, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return "http://" + d.httpAddrs()[0].String(), runDaemon(t, d)
}

func snapshotConfig(t *testing.T) Config {
	var cfg Config
	cfg.UDP.Disabled = true
	cfg.HTTP.Addrs = []string{"127.0.0.1:0"}
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.Snapshot.Path = filepath.Join(t.TempDir(), "snapshot")
	cfg.Snapshot.Peers = true
	return cfg
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

const snapIH = "%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14"

// TestSnapshotKeepsCountsAcrossRestart announces a completed download,
// stops the daemon, starts a new one from the same config and scrapes.
func TestSnapshotKeepsCountsAcrossRestart(t *testing.T) {
	cfg := snapshotConfig(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	base, stop := startDaemon(t, cfg, log)
	get(t, base+"/announce?info_hash="+snapIH+"&peer_id=-TE0001-000000000001&port=6881&uploaded=0&downloaded=9&left=0&event=completed")
	get(t, base+"/announce?info_hash="+snapIH+"&peer_id=-TE0001-000000000002&port=6882&uploaded=0&downloaded=0&left=9")
	if err := stop(); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if _, err := os.Stat(cfg.Snapshot.Path); err != nil {
		t.Fatalf("no snapshot after a graceful stop: %v", err)
	}
	if !strings.Contains(logs.String(), "snapshot written") || !strings.Contains(logs.String(), "swarms=1 peers_v4=2") {
		t.Errorf("stop did not log the snapshot:\n%s", logs.String())
	}
	if tmp, _ := filepath.Glob(cfg.Snapshot.Path + ".tmp*"); len(tmp) != 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}

	logs.Reset()
	base, stop = startDaemon(t, cfg, log)
	scrape := get(t, base+"/scrape?info_hash="+snapIH)
	if err := stop(); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if want := "8:completei1e10:downloadedi1e10:incompletei1e"; !strings.Contains(scrape, want) {
		t.Errorf("scrape after restart = %q, want it to contain %q", scrape, want)
	}
	if !strings.Contains(logs.String(), "snapshot restored") {
		t.Errorf("start did not log the restore:\n%s", logs.String())
	}
}

// TestSnapshotCorruptFileMovedAside: a bad file is logged and kept as
// PATH.bad, and the daemon starts empty rather than refusing to start.
func TestSnapshotCorruptFileMovedAside(t *testing.T) {
	cfg := snapshotConfig(t)
	junk := []byte("CHSNAP\x01\x00 this is not a snapshot")
	if err := os.WriteFile(cfg.Snapshot.Path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	_, stop := startDaemon(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if b, err := os.ReadFile(cfg.Snapshot.Path + ".bad"); err != nil || !bytes.Equal(b, junk) {
		t.Errorf("PATH.bad = %q, %v; want the corrupt file", b, err)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"snapshot refused; starting empty\" path="+cfg.Snapshot.Path) {
		t.Errorf("no error naming the file:\n%s", logs.String())
	}
	// The stop wrote a fresh (empty) snapshot in its place.
	if _, err := os.Stat(cfg.Snapshot.Path); err != nil {
		t.Errorf("no snapshot after the stop: %v", err)
	}
}

func TestSnapshotMissingFileIsFirstStart(t *testing.T) {
	cfg := snapshotConfig(t)
	var logs bytes.Buffer
	_, stop := startDaemon(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a missing snapshot logged an error:\n%s", logs.String())
	}
}
