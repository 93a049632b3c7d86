package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The change feed (migration 00005): every transaction that changes an RBAC table gets the next commit
// position at commit, and each row it changed is recorded. Positions are gapless and become visible in
// increasing order, so reading the changes after a position is a complete and ordered account of what was
// committed since; Snapshot reports the position it read at, so a reader can start from a snapshot and follow.

// Change is one row change of a committed transaction.
type Change struct {
	// Position is the transaction's commit position; Seq orders the changes within it (1, 2, ...).
	Position uint64
	Seq      int
	Table    string
	// Op is "insert", "update", "delete", "truncate" (the whole table emptied; no key, no row) or OpReload
	// (the whole model was replaced, by a Load or ImportCatalogue: no table, key or row; read a Snapshot).
	Op string
	// Key is the row's primary key as a JSON object of its columns (for an update: the key after it); OldKey is
	// an update's key before it.
	Key, OldKey json.RawMessage
	// Row is the whole row (every column, generated ones included) after an insert or update, before a delete.
	Row         json.RawMessage
	CommittedAt time.Time
}

// OpReload is the Op of the one change recorded for a bulk replacement of the whole model (Load,
// ImportCatalogue): its rows are not in the feed. A reader that meets it must read a Snapshot (its Position is
// the reload's or later) and follow from the snapshot's position; ReadChanges ends a batch at a reload, and a
// Follower stops there with ErrReload.
const OpReload = "reload"

// ErrReload is returned (wrapped) by Follower.Run when the next change is an OpReload: the follower applied
// everything before it (Position is the position before the reload). Read a Snapshot and start a new follower
// at its Position.
var ErrReload = errors.New("the whole model was reloaded: read a snapshot")

// ErrPruned is returned (wrapped) when the changes after a reader's position were pruned: it must read a
// Snapshot and follow from the snapshot's position.
var ErrPruned = errors.New("the changes after this position were pruned: read a snapshot")

// ErrPositionAhead is returned (wrapped) when a reader's position is beyond the database's latest: it comes
// from another database or from before a restore. The reader must read a Snapshot.
var ErrPositionAhead = errors.New("position is beyond the database's latest: read a snapshot")

// LatestPosition returns the latest committed position (keygate_position()).
func LatestPosition(ctx context.Context, pool *pgxpool.Pool) (uint64, error) {
	var p int64
	if err := pool.QueryRow(ctx, "SELECT keygate_position()").Scan(&p); err != nil {
		return 0, fmt.Errorf("reading the position: %w", err)
	}
	return uint64(p), nil
}

// ReadChanges returns the committed changes after position after, in position and then Seq order, whole
// transactions only: up to limit changes, but at least the next transaction's whole (which may hold more than
// limit). An empty result means nothing was committed after it. If the changes after it were pruned the error
// wraps ErrPruned, if after is beyond the latest position ErrPositionAhead.
//
// A transaction that replaced the whole model (Load, ImportCatalogue) is one change with Op OpReload, and it
// ends the batch: the result's last change is then the reload, and nothing after it is returned. The reader
// must not apply rows past it: it must read a Snapshot and follow from the snapshot's position.
func ReadChanges(ctx context.Context, pool *pgxpool.Pool, after uint64, limit int) ([]Change, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("reading changes: limit %d is not positive", limit)
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var latest, pruned int64
	if err := tx.QueryRow(ctx, `SELECT keygate_position(), (SELECT pruned_through FROM keygate_feed_horizon)`).
		Scan(&latest, &pruned); err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	switch {
	case after < uint64(pruned):
		return nil, fmt.Errorf("reading changes after position %d (pruned through %d): %w", after, pruned, ErrPruned)
	case after > uint64(latest):
		return nil, fmt.Errorf("reading changes after position %d (latest %d): %w", after, latest, ErrPositionAhead)
	case after == uint64(latest):
		return nil, nil
	}
	rows, err := tx.Query(ctx, `
		WITH c AS (
			SELECT position, xid, changes, committed_at FROM keygate_commits
			WHERE position > $1 ORDER BY position LIMIT $2
		), w AS (
			SELECT c.*, sum(changes) OVER (ORDER BY position) - changes AS before FROM c
		)
		SELECT w.position, ch.seq, ch.table_name, ch.op, ch.key, ch.old_key, ch.row, w.committed_at
		FROM w JOIN keygate_changes ch ON ch.xid = w.xid
		WHERE w.before < $2
		ORDER BY w.position, ch.seq`, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	changes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Change, error) {
		var c Change
		var pos int64
		var key, oldKey, row []byte
		if err := r.Scan(&pos, &c.Seq, &c.Table, &c.Op, &key, &oldKey, &row, &c.CommittedAt); err != nil {
			return c, err
		}
		c.Position = uint64(pos)
		c.Key, c.OldKey, c.Row = json.RawMessage(key), json.RawMessage(oldKey), json.RawMessage(row)
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("reading changes: %w", err)
	}
	if i := slices.IndexFunc(changes, func(c Change) bool { return c.Op == OpReload }); i >= 0 {
		changes = changes[:i+1] // a reload is a transaction's only change
	}
	return changes, nil
}

// Prune deletes the changes of positions up to through (at most the latest position) and returns how many
// transactions it pruned. A reader whose position is below the new horizon gets ErrPruned.
func Prune(ctx context.Context, pool *pgxpool.Pool, through uint64) (int64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pruning changes: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// One pruner at a time; writers are not blocked (they lock keygate_position, not the horizon).
	var pruned, latest int64
	if err := tx.QueryRow(ctx, `SELECT pruned_through, keygate_position() FROM keygate_feed_horizon FOR UPDATE`).
		Scan(&pruned, &latest); err != nil {
		return 0, fmt.Errorf("pruning changes: %w", err)
	}
	upto := min(int64(min(through, 1<<62)), latest)
	if upto <= pruned {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, `DELETE FROM keygate_changes ch USING keygate_commits c
		WHERE ch.xid = c.xid AND c.position > $1 AND c.position <= $2`, pruned, upto); err != nil {
		return 0, fmt.Errorf("pruning changes: %w", err)
	}
	tag, err := tx.Exec(ctx, `DELETE FROM keygate_commits WHERE position > $1 AND position <= $2`, pruned, upto)
	if err != nil {
		return 0, fmt.Errorf("pruning changes: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE keygate_feed_horizon SET pruned_through = $1`, upto); err != nil {
		return 0, fmt.Errorf("pruning changes: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pruning changes: %w", err)
	}
	return tag.RowsAffected(), nil
}

// FollowerConfig configures a Follower. The zero value of a field means its default.
type FollowerConfig struct {
	// Watch configures the LISTEN/NOTIFY watcher that wakes the follower (DatabaseURL required; its Rebuild
	// period is the follower's safety-net poll).
	Watch Config
	// Limit is the number of changes read per batch (whole transactions: a bigger one is read whole).
	// Default 1000.
	Limit int
	// Retry is the wait before reading again after a failed read (doubling up to Watch.MaxBackoff). Default:
	// Watch.MinBackoff.
	Retry time.Duration
}

// DefaultFollowLimit is FollowerConfig.Limit's default.
const DefaultFollowLimit = 1000

// Follower applies the feed's changes in order, from a given position on: it reads them through the pool
// whenever its watcher says the database changed (after notifications, after every reconnection of the
// listener, and every Watch.Rebuild period) and after a failed read, so a lost connection loses nothing.
type Follower struct {
	pool    *pgxpool.Pool
	cfg     FollowerConfig
	watcher *Watcher
	wake    chan struct{}
	apply   func(context.Context, []Change) error
	pos     atomic.Uint64
	logger  *slog.Logger
}

// NewFollower returns a follower that applies the changes after position after. apply is called from one
// goroutine with each batch, in order; when it returns nil the follower's position moves to the batch's last.
func NewFollower(pool *pgxpool.Pool, cfg FollowerConfig, after uint64, apply func(context.Context, []Change) error) (*Follower, error) {
	if pool == nil || apply == nil {
		return nil, errors.New("store follower: pool and apply are required")
	}
	if cfg.Limit < 0 || cfg.Retry < 0 {
		return nil, fmt.Errorf("store follower: limit %d and retry %s must not be negative", cfg.Limit, cfg.Retry)
	}
	if cfg.Limit == 0 {
		cfg.Limit = DefaultFollowLimit
	}
	f := &Follower{pool: pool, cfg: cfg, wake: make(chan struct{}, 1), apply: apply}
	w, err := NewWatcher(cfg.Watch, f.signal)
	if err != nil {
		return nil, err
	}
	f.watcher = w
	f.cfg.Watch = w.cfg
	if f.cfg.Retry == 0 {
		f.cfg.Retry = f.cfg.Watch.MinBackoff
	}
	f.logger = f.cfg.Watch.Logger
	f.pos.Store(after)
	return f, nil
}

func (f *Follower) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Position returns the position of the last change applied (the start position before any).
func (f *Follower) Position() uint64 { return f.pos.Load() }

// ListenerPID returns the server process id of the watcher's listener connection, 0 while disconnected.
func (f *Follower) ListenerPID() uint32 { return f.watcher.PID() }

// Run follows until ctx is done (then it returns nil), apply fails (its error is returned), the whole model was
// reloaded (an error wrapping ErrReload, after applying every change before the reload) or the position is gone
// (an error wrapping ErrPruned or ErrPositionAhead). After ErrReload, ErrPruned or ErrPositionAhead: read a
// Snapshot and start a new follower at its Position. apply is never called with an OpReload change.
func (f *Follower) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = f.watcher.Run(ctx)
	}()
	defer func() {
		cancel()
		<-watchDone
	}()

	retry := time.NewTimer(0) // read once at start, before the first notification
	defer retry.Stop()
	backoff := f.cfg.Retry
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-retry.C:
		}
		err := f.catchUp(ctx)
		switch {
		case err == nil:
			backoff = f.cfg.Retry
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrReload), errors.Is(err, ErrPruned), errors.Is(err, ErrPositionAhead), errors.Is(err, errApply):
			return err
		default:
			wait := backoff/2 + rand.N(backoff/2+1)
			f.logger.WarnContext(ctx, "reading changes failed; retrying", "error", err, "position", f.Position(), "retry_in", wait)
			retry.Reset(wait)
			backoff = min(backoff*2, f.cfg.Watch.MaxBackoff)
		}
	}
}

var errApply = errors.New("applying changes")

// catchUp reads and applies batches until none is left.
func (f *Follower) catchUp(ctx context.Context) error {
	for {
		changes, err := ReadChanges(ctx, f.pool, f.Position(), f.cfg.Limit)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			return nil
		}
		last := changes[len(changes)-1]
		reload := last.Op == OpReload
		if reload {
			changes = changes[:len(changes)-1]
		}
		if len(changes) > 0 {
			if err := f.apply(ctx, changes); err != nil {
				return fmt.Errorf("%w at position %d: %w", errApply, changes[0].Position, err)
			}
			f.pos.Store(changes[len(changes)-1].Position)
		}
		if reload {
			return fmt.Errorf("following changes: position %d (committed %s): %w", last.Position,
				last.CommittedAt.UTC().Format(time.RFC3339Nano), ErrReload)
		}
	}
}
