// Package store is keygate's PostgreSQL source: the schema and its migrations, loading a seed snapshot, reading
// a consistent snapshot back, importing catalogue keys, and watching the database for changes.
//
// The database holds what a seed file holds (model.Snapshot), ids only, plus a copy of the built-in catalogue
// (system keys, keychains and default roles, marked system = true) so that every reference can be a foreign
// key. Constraints and triggers refuse what model.Resolve refuses; every statement that changes a table
// notifies the channel keygate_changes (see Watcher).
package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// ChangeChannel is the channel the change-capture triggers notify, with the changed table's name as payload.
const ChangeChannel = "keygate_changes"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Open connects a pool to the database at dsn (a PostgreSQL URL or key=value string) and checks it answers.
func Open(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("opening database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	return pool, nil
}

// Migrate brings the schema up to date (in the pool's current schema, the first of its search_path). It is
// idempotent, and concurrent callers are serialized by an advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := MigrateApplied(ctx, pool)
	return err
}

// MigrateApplied is Migrate, returning the file names of the migrations it applied (none when the schema was
// already up to date), for keygate migrate to say what it did.
func MigrateApplied(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	provider, closeDB, err := newProvider(pool)
	if err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	defer closeDB()
	results, err := provider.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	applied := make([]string, 0, len(results))
	for _, r := range results {
		applied = append(applied, path.Base(r.Source.Path))
	}
	return applied, nil
}

// newProvider returns a goose provider of the embedded migrations over pool, and a function releasing it.
func newProvider(pool *pgxpool.Pool) (*goose.Provider, func(), error) {
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, nil, err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, nil, err
	}
	db := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return provider, func() { _ = db.Close() }, nil
}
