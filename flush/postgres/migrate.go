package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// A migration is one embedded SQL file, migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order. Names are
// checked by TestMigrationsParse, so a bad one cannot ship.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, path := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".sql")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", path)
		}
		b, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share a version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrateLock is the pg_advisory_lock key that serializes migrations
// across processes ("chihaya!" in ASCII).
const migrateLock = 0x6368696861796121

// Migrate implements flush.Store. It holds a session advisory lock on one
// connection while it works, so concurrent Migrate calls run one after
// the other and the later ones find nothing to do; each migration is
// applied in its own transaction together with its version row.
func (s *store) Migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLock)); err != nil {
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	// If the connection broke, the server released the lock with it.
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", int64(migrateLock))

	if _, err := conn.Exec(ctx, `
CREATE TABLE IF NOT EXISTS chihaya_schema_migrations (
	version    integer     PRIMARY KEY,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return fmt.Errorf("postgres: migrate: create chihaya_schema_migrations: %w", err)
	}
	var newest int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM chihaya_schema_migrations").Scan(&newest); err != nil {
		return fmt.Errorf("postgres: migrate: read version: %w", err)
	}
	if known := ms[len(ms)-1].version; newest > known {
		return fmt.Errorf("postgres: migrate: the database is at schema version %d, newer than this binary's %d", newest, known)
	}
	for _, m := range ms {
		if m.version <= newest {
			continue
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("postgres: migrate %s: %w", m.name, err)
		}
		_, err = tx.Exec(ctx, m.sql)
		if err == nil {
			_, err = tx.Exec(ctx, "INSERT INTO chihaya_schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			tx.Rollback(context.Background())
			return fmt.Errorf("postgres: migrate %s: %w", m.name, err)
		}
	}
	return nil
}
