// Package pgtest gives tests a real PostgreSQL: the database named by KEYGATE_TEST_DATABASE_URL, one fresh
// schema per test (dropped when the test ends) so tests run in parallel. Without the variable a test is
// skipped, naming it; under CI (CI set) it fails instead, so database tests always run in CI.
package pgtest

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Env names the test database's URL.
const Env = "KEYGATE_TEST_DATABASE_URL"

// DSN returns the test database's URL, or skips the test (fails it under CI).
func DSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(Env)
	if dsn == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not set; database tests need PostgreSQL under CI", Env)
		}
		tb.Skipf("%s is not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable); skipping database test", Env)
	}
	return dsn
}

// Schema creates a fresh schema (prefix_<random>), dropped with everything in it when the test ends. It
// returns the schema's name, the test database's URL, and that URL with search_path set to the schema (what
// a keygate process is given).
func Schema(tb testing.TB, prefix string) (schema, dsn, url string) {
	tb.Helper()
	dsn = DSN(tb)
	schema = prefix + "_" + strconv.FormatUint(rand.Uint64(), 36)
	if err := exec(dsn, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("creating schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		if err := exec(dsn, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return schema, dsn, dsn + sep + "search_path=" + schema
}

// Pool returns a pool whose connections work in a fresh schema, closed when the test ends, and the URL of
// that schema (what a watcher or a keygate process is given).
func Pool(tb testing.TB, prefix string) (*pgxpool.Pool, string) {
	tb.Helper()
	schema, dsn, url := Schema(tb, prefix)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		tb.Fatalf("parsing %s: %v", Env, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("connecting: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool, url
}

func exec(dsn, sql string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}
