// Package testenv tells integration tests where the real Redis and
// PostgreSQL servers are. Tests never mock them: without the environment
// variable a test skips with a message saying how to run it, except under
// CI (CI=true), where .ci/run must provide the service and a missing one
// fails the run.
//
// It also builds per-test fixtures on top of them, each undone by
// tb.Cleanup and bounded in time: Database (a fresh PostgreSQL database),
// Proxy (a TCP proxy that can cut or slow a connection), and StartRedis and
// StartRedisCluster (throwaway redis-server processes a test may stop).
// Everything listens on loopback only.
package testenv

import (
	"os"
	"testing"
)

// RedisAddr returns $CHIHAYA_TEST_REDIS, a host:port such as
// 127.0.0.1:6379. If it is unset the test is skipped, except under CI.
func RedisAddr(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "CHIHAYA_TEST_REDIS", "127.0.0.1:6379")
}

// PostgresDSN returns $CHIHAYA_TEST_POSTGRES, a connection string for a
// role that may create databases. If it is unset the test is skipped,
// except under CI.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "CHIHAYA_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
}

// Required fails the test under CI and skips it elsewhere: for a tool or
// package the test needs that this machine lacks. how says how to get it.
func Required(tb testing.TB, what, how string) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("%s is missing under CI; .ci/run must provide it (%s)", what, how)
	}
	tb.Skipf("%s is missing; to run this test: %s", what, how)
}

// InCI reports whether the test runs under CI, where skipping for a
// missing service would hide a broken .ci/run.
func InCI() bool { return os.Getenv("CI") != "" }

func lookup(tb testing.TB, name, example string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		if InCI() {
			tb.Fatalf("%s is unset under CI; .ci/run must set it", name)
		}
		tb.Skipf("set %s=%s to run", name, example)
	}
	return v
}
