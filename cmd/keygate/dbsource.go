package main

import (
	"context"
	"fmt"

	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/store"
)

// databaseSnapshot reads a snapshot from PostgreSQL (a pool for the one read, closed after).
func databaseSnapshot(ctx context.Context, url string) (model.Snapshot, error) {
	pool, err := store.Open(ctx, url)
	if err != nil {
		return model.Snapshot{}, err
	}
	defer pool.Close()
	return store.Snapshot(ctx, pool)
}

// importKeysToDatabase writes the imported catalogue's keys into the database as system keys (migrating the
// schema first). Only the keys go in: the catalogue's role grants and keychains describe the default roles,
// which the database takes from the built-in catalogue on every `keygate db load`; to use them, import to a
// seed file (-o) and load that.
func importKeysToDatabase(ctx context.Context, url string, snap model.Snapshot) error {
	pool, err := store.Open(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		return err
	}
	if err := store.ImportKeys(ctx, pool, snap.Keys); err != nil {
		return fmt.Errorf("database import: %w", err)
	}
	return nil
}
