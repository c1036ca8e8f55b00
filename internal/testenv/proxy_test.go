package testenv

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// startEcho starts a loopback TCP server that echoes each line back.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and reads the echoed line back.
func roundTrip(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

func TestProxyForwards(t *testing.T) {
	p := NewProxy(t, startEcho(t))
	c := dial(t, p.Addr())
	for _, msg := range []string{"hello", "world"} {
		if got, err := roundTrip(c, msg); err != nil || got != msg {
			t.Errorf("roundTrip(%q) = %q, %v; want %q, nil", msg, got, err, msg)
		}
	}
}

func TestProxyCutRestore(t *testing.T) {
	p := NewProxy(t, startEcho(t))
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "before"); err != nil {
		t.Fatalf("roundTrip before Cut: %v", err)
	}

	p.Cut()
	if got, err := roundTrip(c, "open"); err == nil {
		t.Errorf("roundTrip on a connection open across Cut = %q, nil; want an error", got)
	}
	// The proxy accepts and resets at once: the reset may reach the
	// dial itself or the first read, depending on timing.
	if c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
		defer c.Close()
		if got, err := roundTrip(c, "new"); err == nil {
			t.Errorf("roundTrip on a connection made after Cut = %q, nil; want an error", got)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("roundTrip on a connection made after Cut timed out; want it refused at once")
		}
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("dial after Cut timed out; want it refused at once")
	}

	p.Restore()
	if got, err := roundTrip(dial(t, p.Addr()), "after"); err != nil || got != "after" {
		t.Errorf("roundTrip after Restore = %q, %v; want %q, nil", got, err, "after")
	}
}

func TestProxyDelay(t *testing.T) {
	p := NewProxy(t, startEcho(t))
	c := dial(t, p.Addr())
	const d = 100 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	if _, err := roundTrip(c, "slow"); err != nil {
		t.Fatalf("roundTrip with delay: %v", err)
	}
	// One delay each way.
	if got := time.Since(start); got < 2*d {
		t.Errorf("roundTrip with SetDelay(%v) took %v, want at least %v", d, got, 2*d)
	}

	p.SetDelay(0)
	start = time.Now()
	if _, err := roundTrip(c, "fast"); err != nil {
		t.Fatalf("roundTrip without delay: %v", err)
	}
	if got := time.Since(start); got >= d {
		t.Errorf("roundTrip after SetDelay(0) took %v, want under %v", got, d)
	}
}

func TestProxyStopWithDelayedData(t *testing.T) {
	p := NewProxy(t, startEcho(t))
	c := dial(t, p.Addr())
	p.SetDelay(time.Hour)
	io.WriteString(c, "stuck\n")
	time.Sleep(20 * time.Millisecond) // let the proxy read it and start waiting
	done := make(chan struct{})
	go func() { p.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Stop did not return while a chunk was delayed")
	}
}
