package main

import (
	"context"
	"fmt"

	"github.com/keygate/keygate/internal/catalog"
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

// importKeysToDatabase writes an imported catalogue into the database: keys only (store.ImportKeys), or with
// its keychains and role grants merged into the stored model in one locked transaction (store.ImportCatalogue).
func importKeysToDatabase(ctx context.Context, url string, snap model.Snapshot) error {
	pool, err := store.Open(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		return err
	}
	if len(snap.Roles) == 0 && len(snap.Keychains) == 0 {
		if err := store.ImportKeys(ctx, pool, snap.Keys); err != nil {
			return fmt.Errorf("database import: %w", err)
		}
		return nil
	}
	if err := store.ImportCatalogue(ctx, pool, catalog.Builtin(), snap); err != nil {
		return fmt.Errorf("database import: %w", err)
	}
	return nil
}
