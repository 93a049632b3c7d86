package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PruneGuards deletes the invariants' guard rows (keygate_guards, migration 00004) that no running or future
// transaction needs, and returns how many it deleted. A guard row's version must outlive every snapshot taken
// before its writer committed: a REPEATABLE READ or SERIALIZABLE writer holding such a snapshot gets its
// serialization failure from conflicting with that version; with the row deleted it would insert a new one and
// check a stale snapshot. So only rows whose last writer is older than every snapshot held by a backend of this
// database (pg_stat_activity.backend_xmin, its own included) are deleted, and rows locked by a writer are
// skipped. Run it now and then (as Prune); a long transaction anywhere in the database holds it back.
func PruneGuards(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	tag, err := pool.Exec(ctx, `
		WITH horizon AS MATERIALIZED (
			SELECT max(age(backend_xmin)) AS oldest FROM pg_stat_activity
			WHERE backend_xmin IS NOT NULL
				AND datid = (SELECT oid FROM pg_database WHERE datname = current_database())
		), unused AS (
			SELECT g.ctid FROM keygate_guards g, horizon h
			WHERE age(g.xmin) > h.oldest
			FOR UPDATE OF g SKIP LOCKED
		)
		DELETE FROM keygate_guards WHERE ctid IN (SELECT ctid FROM unused)`)
	if err != nil {
		return 0, fmt.Errorf("pruning guard rows: %w", err)
	}
	return tag.RowsAffected(), nil
}
