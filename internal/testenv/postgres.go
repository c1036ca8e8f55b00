package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgTimeout bounds each administrative statement, so a wedged server fails
// the test with a message instead of hanging it until the go test timeout.
const pgTimeout = 30 * time.Second

// Database creates an empty database named chihaya_test_<16 hex digits> on
// the server named by PostgresDSN and returns a DSN for it: the base DSN
// with only the database name replaced. Each test gets its own database so
// tests can run in parallel and never see each other's tables; Cleanup drops
// it WITH (FORCE), which also ends connections the test forgot to close.
func Database(tb testing.TB) string {
	tb.Helper()
	base := PostgresDSN(tb)

	var b [8]byte
	rand.Read(b[:])
	name := "chihaya_test_" + hex.EncodeToString(b[:])

	dsn, err := withDatabase(base, name)
	if err != nil {
		tb.Fatalf("testenv: CHIHAYA_TEST_POSTGRES: %v; set it to a URL such as postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("testenv: connect to CHIHAYA_TEST_POSTGRES: %v; is PostgreSQL running and does the role exist? (pg_isready -h 127.0.0.1)", err)
	}
	defer conn.Close(context.Background())
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		tb.Fatalf("testenv: create database %s: %v; the role in CHIHAYA_TEST_POSTGRES needs CREATEDB", name, err)
	}

	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("testenv: connect to drop database %s: %v; drop it by hand", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("testenv: drop database %s: %v; drop it by hand (PostgreSQL 13+ is needed for WITH (FORCE))", name, err)
		}
	})
	return dsn
}

// withDatabase returns dsn with its database name replaced by name. It
// accepts both forms pgx does: a postgres:// URL and keyword=value pairs.
func withDatabase(dsn, name string) (string, error) {
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return "", err
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// In keyword=value form the last setting of a keyword wins.
	out := strings.TrimSpace(dsn) + " dbname=" + name
	cfg, err := pgx.ParseConfig(out)
	if err != nil {
		return "", err
	}
	if cfg.Database != name {
		return "", fmt.Errorf("cannot replace the database name in %q", dsn)
	}
	return out, nil
}
