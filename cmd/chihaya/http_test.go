package main

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDaemonServesHTTP starts the daemon with HTTP on loopback (UDP off)
// and checks that an announce is answered and that run stops cleanly.
func TestDaemonServesHTTP(t *testing.T) {
	var cfg Config
	cfg.UDP.Disabled = true
	cfg.HTTP.Addrs = []string{"127.0.0.1:0", "[::1]:0"}
	cfg.Admin.Addr = "127.0.0.1:0"
	if err := cfg.check(); err != nil {
		t.Fatalf("config: %v", err)
	}
	d, err := start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if d.udpAddrs() != nil {
		t.Errorf("udpAddrs() = %v with UDP disabled", d.udpAddrs())
	}
	addrs := d.httpAddrs()
	if len(addrs) != 2 || addrs[0].Port() == 0 || addrs[1].Port() == 0 {
		t.Fatalf("httpAddrs() = %v, want two bound addresses", addrs)
	}
	runDaemon(t, d)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i, a := range addrs { // one swarm over both families: i+1 seeders
		url := "http://" + a.String() + "/announce?info_hash=%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14" +
			"&peer_id=-TE0001-000000000001&port=6881&uploaded=0&downloaded=0&left=0"
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "d8:completei"+strconv.Itoa(i+1)+"e") {
			t.Errorf("announce to %v: status %d, body %q, err %v", a, resp.StatusCode, body, err)
		}
	}
}
