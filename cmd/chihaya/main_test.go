package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunFlags(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[udp]\nworkerz = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badAddr := filepath.Join(dir, "badaddr.toml")
	if err := os.WriteFile(badAddr, []byte("[admin]\naddr = \"localhost\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// -check-config must not listen: this file's address is taken.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := filepath.Join(dir, "taken.toml")
	if err := os.WriteFile(taken, fmt.Appendf(nil, "[admin]\naddr = %q\n", ln.Addr()), 0o600); err != nil {
		t.Fatal(err)
	}
	example := "../../chihaya.example.toml"
	tests := []struct {
		name    string
		args    []string
		stdout  string // substring wanted on stdout
		wantErr string // substring wanted in the error; "" means success
	}{
		{"version", []string{"-version"}, "chihaya ", ""},
		{"stray argument", []string{"serve"}, "", `unexpected argument "serve"`},
		{"unknown flag", []string{"-bogus"}, "", "flag provided but not defined"},
		{"missing file", []string{"-config", filepath.Join(dir, "nope.toml")}, "", "nope.toml"},
		{"bad key", []string{"-config", bad}, "", "unknown key udp.workerz"},
		{"check example", []string{"-check-config", example}, example + ": ok\n", ""},
		{"check production", []string{"-check-config", "../../dist/chihaya.production.toml"}, "chihaya.production.toml: ok\n", ""},
		{"check without listening", []string{"-check-config", taken}, taken + ": ok\n", ""},
		{"check bad key", []string{"-check-config", bad}, "", "unknown key udp.workerz"},
		{"check bad admin addr", []string{"-check-config", badAddr}, "", "key admin.addr"},
		{"check missing file", []string{"-check-config", filepath.Join(dir, "nope.toml")}, "", "nope.toml"},
		{"check and config", []string{"-check-config", example, "-config", example}, "", "do not go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(tt.args, &stdout, &stderr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("run(%q) = %v, want success", tt.args, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tt.args, stdout.String(), tt.stdout)
			}
		})
	}
}

// TestGracefulStop checks that the daemon, once its context is done (as
// SIGINT and SIGTERM make it), stops every part, returns nil and leaves
// no goroutine behind.
func TestGracefulStop(t *testing.T) {
	before := runtime.NumGoroutine()
	var cfg Config
	cfg.UDP.Addrs = []string{"127.0.0.1:0", "[::1]:0"}
	cfg.HTTP.Addrs = []string{"127.0.0.1:0"}
	cfg.UDP.Workers = 2
	cfg.Admin.Addr = "127.0.0.1:0"
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	d, err := start(cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	stop := runDaemon(t, d)
	// A served request shows the parts are up before the stop.
	conn, err := net.Dial("tcp", d.httpAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.Contains(line, "404") {
		t.Fatalf("HTTP reply %q, %v; want a 404", line, err)
	}
	conn.Close()
	// The admin listener reports the daemon ready, and the 404 above.
	admin := "http://" + d.adminAddrs()[0].String()
	if code, body := httpGet(t, admin+"/readyz"); code != 200 {
		t.Errorf("/readyz while serving = %d %q, want 200", code, body)
	}
	code, body := httpGet(t, admin+"/metrics")
	for _, want := range []string{
		`chihaya_requests_total{action="",protocol="http",result="not_found"} 1`,
		`chihaya_requests_total{action="announce",protocol="udp",result=""} 0`,
		`chihaya_peers{family="ipv6"} 0`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics = %d, lacking %s", code, want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v after a graceful stop, want nil", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // goroutines unwind asynchronously after run returns
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after stop, %d before", n, before)
	}
}

// httpGet fetches url without keeping the connection, so that nothing
// outlives the test's goroutine count.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// runDaemon runs d in the background until stop is called or the test
// ends. stop cancels run and returns what it returned, or an error if it
// outlasts the shutdown timeout by 5 seconds; calling it again returns
// the same. A daemon the test did not stop is stopped at cleanup, and an
// error from that fails the test.
func runDaemon(t *testing.T, d *daemon) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(d.cfg.shutdownTimeout() + 5*time.Second):
				err = errors.New("run did not return within the shutdown timeout")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the daemon: %v", err)
		}
	})
	return stop
}
