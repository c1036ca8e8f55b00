package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStartTimeout bounds how long a fresh redis-server may take to answer
// PING, and redisStopTimeout how long it may take to exit after SHUTDOWN
// before it is killed.
const (
	redisStartTimeout = 10 * time.Second
	redisStopTimeout  = 5 * time.Second
)

// A RedisServer is a throwaway redis-server owned by one test, for tests
// that must stop and restart Redis, which the shared $CHIHAYA_TEST_REDIS
// server cannot be. It keeps nothing on disk, so Start after Stop gives an
// empty server on the same port: a Redis restart that lost its data.
//
// Methods must not be called concurrently with each other; Addr may be.
type RedisServer struct {
	tb   testing.TB
	addr string
	dir  string     // its files, across Stop and Start; removed after the last Stop
	proc *redisProc // nil while stopped
}

// StartRedis starts a redis-server from $PATH on a free loopback port and
// waits until it answers PING. Cleanup stops it.
func StartRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	requireRedisServer(tb)
	dir := tb.TempDir()
	var (
		s   *RedisServer
		err error
	)
	// A free port can be taken between our probe and redis-server's bind;
	// a few fresh tries make that race harmless.
	for range 3 {
		var port int
		port, err = freePort()
		if err != nil {
			break
		}
		s = &RedisServer{tb: tb, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir}
		s.proc, err = startRedisProc(dir, port, nil)
		if err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("testenv: start redis-server: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Addr returns the server's host:port, the same across Stop and Start.
func (s *RedisServer) Addr() string { return s.addr }

// Stop shuts the server down without saving and waits for the process to
// exit. Stopping a stopped server does nothing.
func (s *RedisServer) Stop() {
	if s.proc == nil {
		return
	}
	if err := s.proc.stop(); err != nil {
		s.tb.Errorf("testenv: stop redis-server on %s: %v", s.addr, err)
	}
	s.proc = nil
}

// Start starts the server again, empty, on the same port, and waits until
// it answers PING. Starting a running server does nothing.
func (s *RedisServer) Start() {
	s.tb.Helper()
	if s.proc != nil {
		return
	}
	_, p, _ := net.SplitHostPort(s.addr)
	port, _ := strconv.Atoi(p)
	// The same directory: one made now would be removed before the
	// cleanup that stops this server, while it may still write its log.
	proc, err := startRedisProc(s.dir, port, nil)
	if err != nil {
		s.tb.Fatalf("testenv: restart redis-server on %s: %v; is something else now using the port?", s.addr, err)
	}
	s.proc = proc
}

func requireRedisServer(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Required(tb, "redis-server", "apt-get install redis-server")
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// redisProc is one running redis-server process.
type redisProc struct {
	addr   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returns
	once   sync.Once
}

// startRedisProc runs redis-server on 127.0.0.1:port with its files in dir
// and extra arguments, and waits until it answers PING.
func startRedisProc(dir string, port int, extra []string) (*redisProc, error) {
	args := append(baseArgs(dir, port, "redis"), "--save", "", "--appendonly", "no")
	return startRedisProcArgs(dir, port, append(args, extra...))
}

// baseArgs returns the arguments every redis-server of ours gets: loopback
// only, in the foreground, logging to dir/NAME-PORT.log.
func baseArgs(dir string, port int, name string) []string {
	return []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--dir", dir,
		"--logfile", filepath.Join(dir, name+"-"+strconv.Itoa(port)+".log"),
		"--daemonize", "no",
	}
}

// startRedisProcArgs runs redis-server with args, which must include
// baseArgs for port (its log is found there), and waits until it answers
// PING.
func startRedisProcArgs(dir string, port int, args []string) (*redisProc, error) {
	p := &redisProc{
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		exited: make(chan struct{}),
	}
	for i := range len(args) - 1 {
		if args[i] == "--logfile" {
			p.log = args[i+1]
		}
	}
	p.cmd = exec.Command("redis-server", args...)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run redis-server: %w", err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	for {
		if c.Ping(ctx).Err() == nil {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("redis-server on %s exited at startup; its log %s says: %s", p.addr, p.log, p.tail())
		case <-ctx.Done():
			p.kill()
			return nil, fmt.Errorf("redis-server on %s did not answer PING within %v; its log %s says: %s", p.addr, redisStartTimeout, p.log, p.tail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SHUTDOWN NOSAVE NOW and waits for the process to exit, killing it
// if it lingers. It is idempotent.
func (p *redisProc) stop() error {
	var err error
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), redisStopTimeout)
		defer cancel()
		c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
		// NOW: a master with replicas still syncing would otherwise
		// wait for them (shutdown-timeout) before it exits. The reply
		// is the closed connection.
		c.Do(ctx, "SHUTDOWN", "NOSAVE", "NOW")
		c.Close()
		select {
		case <-p.exited:
		case <-ctx.Done():
			p.cmd.Process.Kill()
			<-p.exited
			err = errors.New("redis-server ignored SHUTDOWN NOSAVE and was killed")
		}
	})
	return err
}

func (p *redisProc) kill() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
}

// tail returns the end of the server's log, for error messages.
func (p *redisProc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
