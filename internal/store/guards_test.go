package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func guardCount(t *testing.T, ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) int {
	t.Helper()
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM keygate_guards`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPruneGuards: a guard row a REPEATABLE READ writer's older snapshot still needs survives PruneGuards, so that
// writer still gets its serialization failure instead of breaking the invariant; once no such snapshot is left
// the rows go.
func TestPruneGuards(t *testing.T) {
	t.Parallel()
	pool := invariantPool(t)
	ctx := context.Background()

	// The REPEATABLE READ writer takes its snapshot first.
	rr, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rr.Rollback(ctx) }()
	if _, err := rr.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	// A READ COMMITTED writer unassigns one of org-layer5's two admins and commits: it takes the org's guard row.
	if _, err := pool.Exec(ctx, delAlice); err != nil {
		t.Fatal(err)
	}
	if _, err := PruneGuards(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var kept bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM keygate_guards WHERE kind = 'org' AND id = 'org-layer5')`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if !kept {
		t.Fatal("PruneGuards deleted the guard row an older REPEATABLE READ snapshot needs")
	}
	// The writer, whose snapshot still shows u-alice, unassigns u-bob: refused by a serialization failure.
	if _, err := rr.Exec(ctx, delBob); err != nil {
		t.Fatal(err)
	}
	err = rr.Commit(ctx)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("the REPEATABLE READ commit = %v, want a serialization failure (40001)", err)
	}

	// No snapshot needs the rows any more: they go (other backends on the server may hold the horizon back a while).
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := PruneGuards(ctx, pool); err != nil {
			t.Fatal(err)
		}
		n := guardCount(t, ctx, pool)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d guard rows left after a minute of PruneGuards", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// And the invariant is enforced as before without them.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, delBob); err != nil {
		t.Fatal(err)
	}
	wantViolation(t, tx.Commit(ctx), "organizations_live_org_admin", "org-layer5")
}
