package main

import (
	"context"
	"errors"

	"github.com/keygate/keygate/internal/model"
)

// databaseSnapshot reads a snapshot from PostgreSQL.
func databaseSnapshot(ctx context.Context, url string) (model.Snapshot, error) {
	return model.Snapshot{}, errors.New("database source: not wired yet")
}

func importKeysToDatabase(ctx context.Context, url string, snap model.Snapshot) error {
	return errors.New("database import: not wired yet")
}
