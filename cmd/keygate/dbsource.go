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
// schema first). Only keys go in: role grants and keychains (from --grants / --keychains) are data that
// `keygate db load` replaces wholesale, so rather than drop them silently the import is refused (bad usage)
// when there are any; import them into a seed file with -o and `keygate db load --seed` it instead.
func importKeysToDatabase(ctx context.Context, url string, snap model.Snapshot) error {
	if len(snap.Roles) > 0 || len(snap.Keychains) > 0 {
		return usageErr("--database-url imports keys only, and the catalogue has %d roles with grants and %d keychains "+
			"(from --grants/--keychains or DIR): give only --keys to import the keys into the database, or write "+
			"everything to a seed file with -o and load it with `keygate db load --seed FILE`", len(snap.Roles), len(snap.Keychains))
	}
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
