package testenv

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestWithDatabase(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/x?sslmode=disable"},
		{"postgresql://u:p@localhost/", "postgresql://u:p@localhost/x"},
		{"postgres://u@localhost", "postgres://u@localhost/x"},
		{"host=127.0.0.1 user=postgres dbname=postgres sslmode=disable", "host=127.0.0.1 user=postgres dbname=postgres sslmode=disable dbname=x"},
	}
	for _, tt := range tests {
		got, err := withDatabase(tt.in, "x")
		if err != nil || got != tt.want {
			t.Errorf("withDatabase(%q, x) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestDatabase(t *testing.T) {
	dsn := Database(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	var name string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "chihaya_test_") || len(name) != len("chihaya_test_")+16 {
		t.Errorf("current_database() = %q, want chihaya_test_<16 hex>", name)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Errorf("CREATE TABLE in the new database: %v", err)
	}
	// The connection stays open: Cleanup must drop the database anyway.
}
