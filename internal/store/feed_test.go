package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keygate/keygate/internal/model"
)

// feedTables are the RBAC tables and their primary keys, as migration 00005 records them.
var feedTables = map[string][]string{
	"keys": {"id"}, "users": {"id"}, "organizations": {"id"}, "keychains": {"id"},
	"keychain_keys": {"keychain_id", "key_id"}, "roles": {"id"}, "role_keychains": {"role_id", "keychain_id"},
	"role_owner_only": {"role_id", "key_id"}, "teams": {"id"}, "team_members": {"team_id", "user_id"},
	"workspaces": {"id"}, "workspace_teams": {"workspace_id", "team_id"},
	"workspace_members": {"workspace_id", "user_id"}, "designs": {"id"},
	"assignments": {"user_id", "role_id", "org_id", "team_id", "workspace_id"}, "tokens": {"id"},
	"routes": {"service", "method", "path"},
}

// tableState is every RBAC table's rows by primary key, as canonical jsonb text.
type tableState map[string]map[string]string

// dumpTables reads every RBAC table in one REPEATABLE READ transaction, with the position it read at.
func dumpTables(t testing.TB, pool *pgxpool.Pool) (uint64, tableState) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var pos int64
	if err := tx.QueryRow(ctx, `SELECT keygate_position()`).Scan(&pos); err != nil {
		t.Fatal(err)
	}
	state := tableState{}
	for table, cols := range feedTables {
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT keygate_key(to_jsonb(t), $1)::text, to_jsonb(t)::text FROM %s t`,
			pgx.Identifier{table}.Sanitize()), cols)
		if err != nil {
			t.Fatal(err)
		}
		state[table] = map[string]string{}
		for rows.Next() {
			var k, r string
			if err := rows.Scan(&k, &r); err != nil {
				t.Fatal(err)
			}
			state[table][k] = r
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return uint64(pos), state
}

// replay applies changes to state, checking the feed's order as it goes: positions contiguous from the
// state's, sequences 1, 2, ... within each.
type replay struct {
	state tableState
	pos   uint64
	seq   int
}

func newReplay(pos uint64) *replay {
	r := &replay{state: tableState{}, pos: pos}
	for table := range feedTables {
		r.state[table] = map[string]string{}
	}
	return r
}

// snapshotReplay is a replay starting from the database's tables and position (as a reader starts from a
// Snapshot).
func snapshotReplay(t testing.TB, pool *pgxpool.Pool) *replay {
	t.Helper()
	pos, state := dumpTables(t, pool)
	return &replay{state: state, pos: pos}
}

func (r *replay) apply(changes []Change) error {
	for _, c := range changes {
		switch {
		case c.Position == r.pos && c.Seq == r.seq+1:
		case c.Position == r.pos+1 && c.Seq == 1:
			r.pos = c.Position
		default:
			return fmt.Errorf("change %d.%d after %d.%d: out of order, repeated or missing", c.Position, c.Seq, r.pos, r.seq)
		}
		r.seq = c.Seq
		rows, ok := r.state[c.Table]
		if !ok && c.Op != OpReload {
			return fmt.Errorf("change %d.%d of unknown table %q", c.Position, c.Seq, c.Table)
		}
		switch c.Op {
		case "insert":
			rows[string(c.Key)] = string(c.Row)
		case "update":
			delete(rows, string(c.OldKey))
			rows[string(c.Key)] = string(c.Row)
		case "delete":
			delete(rows, string(c.Key))
		case "truncate":
			clear(rows)
		case OpReload:
			return fmt.Errorf("change %d.%d: a reload reached apply (the follower must stop at it)", c.Position, c.Seq)
		default:
			return fmt.Errorf("change %d.%d: unknown op %q", c.Position, c.Seq, c.Op)
		}
	}
	return nil
}

func diffStates(t testing.TB, got, want tableState) {
	t.Helper()
	for _, table := range slices.Sorted(maps.Keys(want)) {
		if !maps.Equal(got[table], want[table]) {
			var diff []string
			for k, v := range want[table] {
				if got[table][k] != v {
					diff = append(diff, fmt.Sprintf("want %s = %s, got %q", k, v, got[table][k]))
				}
			}
			for k := range got[table] {
				if _, ok := want[table][k]; !ok {
					diff = append(diff, fmt.Sprintf("extra %s", k))
				}
			}
			slices.Sort(diff)
			t.Errorf("table %s replayed from the feed differs from the database:\n%s", table, strings.Join(diff[:min(len(diff), 10)], "\n"))
		}
	}
}

// feedPool is a migrated pool with room for concurrent writers, its URL, and the invariant seed loaded.
func feedPool(t testing.TB, conns int32, app string) (*pgxpool.Pool, string) {
	t.Helper()
	base, url := migratedPool(t)
	if err := Load(context.Background(), base, testBuiltin(), invariantSeed()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return openPool(t, url, conns, app), url
}

func openPool(t testing.TB, url string, conns int32, app string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = conns
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// writer runs n transactions of writer w at READ COMMITTED: new users with assignments and tokens, email
// updates, token renames (a key change), deletes, and every seventh a rolled-back transaction that must not
// appear (the later ones' updates of its rows then change nothing). It returns the positions of its commits,
// in commit order.
func writer(ctx context.Context, pool *pgxpool.Pool, w, n int) ([]uint64, error) {
	var positions []uint64
	for i := range n {
		u := fmt.Sprintf("u-w%d-%d", w, i)
		stmts := []string{
			fmt.Sprintf(`INSERT INTO users (id, email) VALUES ('%s', '%s@example.com')`, u, u),
			assign(u, "r-user", "org-layer5"),
			fmt.Sprintf(`INSERT INTO tokens (id, user_id) VALUES ('tok-%s', '%s')`, u, u),
		}
		if i > 0 && i%3 == 0 {
			stmts = append(stmts, fmt.Sprintf(`UPDATE users SET email = 'changed-%d@example.com' WHERE id = 'u-w%d-%d'`, i, w, i-1))
		}
		if i > 0 && i%4 == 0 {
			stmts = append(stmts, fmt.Sprintf(`UPDATE tokens SET id = id || '-renamed', revoked = true WHERE id = 'tok-u-w%d-%d'`, w, i-1))
		}
		if i > 1 && i%5 == 0 {
			stmts = append(stmts, fmt.Sprintf(`DELETE FROM assignments WHERE user_id = 'u-w%d-%d'`, w, i-2))
		}
		rollback := i%7 == 6
		err := func() error {
			tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback(ctx) }()
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
			}
			if rollback {
				return nil
			}
			var xid string
			if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
				return err
			}
			if err := tx.Commit(ctx); err != nil {
				return err
			}
			// The consistency token read right after the commit covers it.
			var own, token int64
			if err := pool.QueryRow(ctx, `SELECT position, keygate_position() FROM keygate_commits WHERE xid = $1::xid8`, xid).
				Scan(&own, &token); err != nil {
				return fmt.Errorf("the commit's position: %w", err)
			}
			if token < own {
				return fmt.Errorf("keygate_position() %d after the commit of position %d", token, own)
			}
			positions = append(positions, uint64(own))
			return nil
		}()
		if err != nil {
			return positions, fmt.Errorf("writer %d, transaction %d: %w", w, i, err)
		}
	}
	return positions, nil
}

// runWriters runs writers first, first+1, ... concurrently and checks each one's commits took increasing
// positions. It returns the number of commits.
func runWriters(t *testing.T, pool *pgxpool.Pool, first, writers, n int) int {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, writers)
	var commits atomic.Int64
	for w := range writers {
		wg.Go(func() {
			positions, err := writer(context.Background(), pool, first+w, n)
			commits.Add(int64(len(positions)))
			if err == nil && !slices.IsSorted(positions) {
				err = fmt.Errorf("writer %d: positions of successive commits not increasing: %v", w, positions)
			}
			errs[w] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return int(commits.Load())
}

// running is a follower's Run in a goroutine.
type running struct {
	f      *Follower
	cancel context.CancelFunc
	done   chan error
}

// stop ends Run and returns its error.
func (r running) stop() error {
	r.cancel()
	return <-r.done
}

// follow runs a follower from position after, replaying into r.
func follow(t *testing.T, pool *pgxpool.Pool, url string, after uint64, r *replay) running {
	t.Helper()
	f, err := NewFollower(pool, FollowerConfig{
		Watch: Config{DatabaseURL: url, Debounce: 5 * time.Millisecond, Rebuild: 2 * time.Second,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Limit: 50,
	}, after, func(_ context.Context, changes []Change) error { return r.apply(changes) })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(cancel)
	return running{f, cancel, done}
}

// waitPosition waits until the follower reached the latest position and returns it.
func waitPosition(t *testing.T, run running, pool *pgxpool.Pool) uint64 {
	t.Helper()
	latest, err := LatestPosition(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for run.f.Position() < latest {
		select {
		case err := <-run.done:
			t.Fatalf("follower stopped at position %d (latest %d): %v", run.f.Position(), latest, err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower at position %d, latest %d", run.f.Position(), latest)
		}
	}
	return latest
}

// TestFeedConcurrentWriters: 8 writers commit concurrently; a follower from the Load's position sees every
// change exactly once, positions contiguous and in commit order, and its replay is the database.
func TestFeedConcurrentWriters(t *testing.T) {
	t.Parallel()
	pool, url := feedPool(t, 10, "keygate-feed-writers")
	r := snapshotReplay(t, pool) // after the Load (position 1, a reload)
	run := follow(t, pool, url, r.pos, r)
	commits := runWriters(t, pool, 0, 8, 25)
	latest := waitPosition(t, run, pool)
	if err := run.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The Load, then 8 writers x 25 transactions less the 3 of each rolled back.
	if want := uint64(1 + 8*22); commits != 8*22 || latest != want {
		t.Errorf("latest position %d, want %d", latest, want)
	}
	pos, state := dumpTables(t, pool)
	if pos != latest || r.pos != latest {
		t.Fatalf("dump at %d, replay at %d, latest %d", pos, r.pos, latest)
	}
	diffStates(t, r.state, state)
	snap, err := Snapshot(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Position != latest {
		t.Errorf("Snapshot.Position = %d, want %d", snap.Position, latest)
	}
	if len(snap.Users) != len(state["users"]) || len(snap.Assignments) != len(state["assignments"]) {
		t.Errorf("snapshot holds %d users, %d assignments; the replay %d, %d", len(snap.Users), len(snap.Assignments),
			len(state["users"]), len(state["assignments"]))
	}
}

// TestFollowerSurvivesTermination: the follower's connections (listener and pool) are terminated again and
// again while writers commit; it loses nothing.
func TestFollowerSurvivesTermination(t *testing.T) {
	t.Parallel()
	pool, url := feedPool(t, 10, "keygate-feed-writers2")
	app := "keygate-follower-" + strconv.FormatUint(rand.Uint64(), 36)
	followerURL := url + "&application_name=" + app
	followerPool := openPool(t, url, 2, app)
	r := snapshotReplay(t, pool)
	run := follow(t, followerPool, followerURL, r.pos, r)
	var killed atomic.Int64
	killCtx, stopKilling := context.WithCancel(context.Background())
	var killer sync.WaitGroup
	killer.Go(func() {
		for killCtx.Err() == nil {
			var n int64
			if err := pool.QueryRow(killCtx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE application_name = $1`, app).Scan(&n); err == nil {
				killed.Add(n)
			}
			select {
			case <-killCtx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	runWriters(t, pool, 0, 4, 25)
	stopKilling()
	killer.Wait()
	if killed.Load() < 3 {
		t.Fatalf("terminated only %d follower connections", killed.Load())
	}
	latest := waitPosition(t, run, pool)
	if err := run.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	pos, state := dumpTables(t, pool)
	if pos != latest || r.pos != latest {
		t.Fatalf("dump at %d, replay at %d, latest %d", pos, r.pos, latest)
	}
	diffStates(t, r.state, state)
	t.Logf("%d follower connections terminated; %d positions followed", killed.Load(), latest)
}

// TestFeedResume: a reader saves its position, stops, and a new follower from that position continues with
// exactly the changes after it; Snapshot's position is such a starting point.
func TestFeedResume(t *testing.T) {
	t.Parallel()
	pool, url := feedPool(t, 6, "keygate-feed-resume")
	ctx := context.Background()
	changes, err := ReadChanges(ctx, pool, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Position != 1 || changes[0].Op != OpReload {
		t.Fatalf("first batch: %+v, want position 1's one reload (the Load)", changes)
	}
	r := snapshotReplay(t, pool)  // a reload: the reader starts from a snapshot
	runWriters(t, pool, 0, 2, 10) // committed while nobody follows
	saved := r.pos
	run := follow(t, pool, url, saved, r)
	runWriters(t, pool, 2, 2, 10) // and while the new follower runs
	waitPosition(t, run, pool)
	if err := run.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	_, state := dumpTables(t, pool)
	diffStates(t, r.state, state)

	// From a snapshot: its position, then the feed.
	snap, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE users SET email = 'after-snapshot' WHERE id = 'u-carol'`); err != nil {
		t.Fatal(err)
	}
	after, err := ReadChanges(ctx, pool, snap.Position, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 1 || after[0].Position != snap.Position+1 || after[0].Op != "update" || after[0].Table != "users" {
		t.Fatalf("changes after the snapshot: %+v, want the one update", after)
	}
}

// TestFeedPruned: pruned positions are reported, so the reader knows to read a snapshot.
func TestFeedPruned(t *testing.T) {
	t.Parallel()
	pool, url := feedPool(t, 4, "keygate-feed-prune")
	ctx := context.Background()
	for i := range 5 {
		if _, err := pool.Exec(ctx, fmt.Sprintf(`UPDATE users SET email = 'e%d' WHERE id = 'u-carol'`, i)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := Prune(ctx, pool, 3)
	if err != nil || n != 3 {
		t.Fatalf("Prune(3) = %d, %v; want 3 transactions", n, err)
	}
	for _, after := range []uint64{0, 2} {
		if _, err := ReadChanges(ctx, pool, after, 10); !errors.Is(err, ErrPruned) {
			t.Errorf("ReadChanges(after %d) = %v, want ErrPruned", after, err)
		}
	}
	changes, err := ReadChanges(ctx, pool, 3, 10)
	if err != nil || len(changes) != 3 || changes[0].Position != 4 {
		t.Fatalf("ReadChanges(after 3) = %d changes, %v; want positions 4-6", len(changes), err)
	}
	if _, err := ReadChanges(ctx, pool, 7, 10); !errors.Is(err, ErrPositionAhead) {
		t.Errorf("ReadChanges(after 7, latest 6) = %v, want ErrPositionAhead", err)
	}
	if n, err := Prune(ctx, pool, 1000); err != nil || n != 3 {
		t.Errorf("Prune(1000) = %d, %v; want the 3 left (never past the latest position)", n, err)
	}
	if changes, err := ReadChanges(ctx, pool, 6, 10); err != nil || len(changes) != 0 {
		t.Errorf("ReadChanges(latest) after pruning everything = %v, %v; want nothing, no error", changes, err)
	}
	run := follow(t, pool, url, 2, newReplay(2))
	select {
	case err := <-run.done:
		if !errors.Is(err, ErrPruned) {
			t.Errorf("Run from a pruned position = %v, want ErrPruned", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a follower from a pruned position runs on")
	}
}

// TestFeedRecordsEveryOp: what each kind of write records, and what is not recorded.
func TestFeedRecordsEveryOp(t *testing.T) {
	t.Parallel()
	pool, _ := feedPool(t, 4, "keygate-feed-ops")
	ctx := context.Background()
	start, err := LatestPosition(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(stmts ...string) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO tokens (id, user_id) VALUES ('tok-a', 'u-carol'), ('tok-b', 'u-carol')`,
		`SAVEPOINT s`, `INSERT INTO tokens (id, user_id) VALUES ('tok-gone', 'u-carol')`, `ROLLBACK TO SAVEPOINT s`,
		`UPDATE tokens SET id = 'tok-c', revoked = true WHERE id = 'tok-a'`,
		`DELETE FROM tokens WHERE id = 'tok-b'`)
	exec(`DELETE FROM tokens WHERE id = 'nothing'`) // changes no row: takes no position
	func() {                                        // rolled back: takes no position
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `DELETE FROM tokens`); err != nil {
			t.Fatal(err)
		}
	}()
	exec(`TRUNCATE routes`)
	// A Load (the whole model replaced) is one reload change, and the edits after it are recorded as ever.
	if err := Load(ctx, pool, testBuiltin(), invariantSeed()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	exec(`UPDATE users SET email = 'after-load@example.com' WHERE id = 'u-carol'`)
	exec(`INSERT INTO tokens (id, user_id) VALUES ('tok-d', 'u-carol')`, `DELETE FROM tokens WHERE id = 'tok-d'`)
	// The batch ends at the reload: nothing after it comes with it.
	changes, err := ReadChanges(ctx, pool, start, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(changes); n == 0 || changes[n-1].Op != OpReload {
		t.Fatalf("the batch over a Load does not end at its reload: %+v", changes)
	}
	more, err := ReadChanges(ctx, pool, changes[len(changes)-1].Position, 100)
	if err != nil {
		t.Fatal(err)
	}
	changes = append(changes, more...)
	type rec struct {
		pos              uint64
		seq              int
		table, op        string
		key, oldKey, row string
	}
	var got []rec
	for _, c := range changes {
		row := string(c.Row)
		if c.Row != nil {
			row = "..."
			if strings.Contains(string(c.Row), `"revoked": true`) {
				row = "revoked"
			}
		}
		got = append(got, rec{c.Position - start, c.Seq, c.Table, c.Op, string(c.Key), string(c.OldKey), row})
	}
	want := []rec{
		{1, 1, "tokens", "insert", `{"id": "tok-a"}`, "", "..."},
		{1, 2, "tokens", "insert", `{"id": "tok-b"}`, "", "..."},
		{1, 3, "tokens", "update", `{"id": "tok-c"}`, `{"id": "tok-a"}`, "revoked"},
		{1, 4, "tokens", "delete", `{"id": "tok-b"}`, "", "..."},
		{2, 1, "routes", "truncate", "", "", ""},
		{3, 1, "", "reload", "", "", ""},
		{4, 1, "users", "update", `{"id": "u-carol"}`, `{"id": "u-carol"}`, "..."},
		{5, 1, "tokens", "insert", `{"id": "tok-d"}`, "", "..."},
		{5, 2, "tokens", "delete", `{"id": "tok-d"}`, "", "..."},
	}
	if !slices.Equal(got, want) {
		t.Errorf("recorded:\n%v\nwant:\n%v", got, want)
	}
	// One position per committed transaction; the Load's outbox holds one row, not one per row loaded.
	var latest, loadRows int64
	if err := pool.QueryRow(ctx, `SELECT keygate_position(), (SELECT count(*) FROM keygate_changes ch
		JOIN keygate_commits c ON c.xid = ch.xid WHERE c.position = $1)`, int64(start+3)).Scan(&latest, &loadRows); err != nil {
		t.Fatal(err)
	}
	if latest != int64(start+5) || loadRows != 1 {
		t.Errorf("latest position %d, want %d; the Load recorded %d changes, want 1", latest, start+5, loadRows)
	}
}

// TestFollowerStopsAtReload: a follower applies everything before a Load, then stops with ErrReload at the
// position before it; a new follower from a Snapshot's position goes on, and its replay is the database.
// ImportCatalogue (the other bulk writer) is a reload too.
func TestFollowerStopsAtReload(t *testing.T) {
	t.Parallel()
	pool, url := feedPool(t, 6, "keygate-feed-reload")
	ctx := context.Background()
	r := snapshotReplay(t, pool)
	run := follow(t, pool, url, r.pos, r)
	runWriters(t, pool, 0, 2, 5)
	_, beforeLoad := dumpTables(t, pool)
	if err := Load(ctx, pool, testBuiltin(), invariantSeed()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	loadPos, err := LatestPosition(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-run.done:
		if !errors.Is(err, ErrReload) {
			t.Fatalf("Run over a Load = %v, want ErrReload", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the follower runs on past a Load")
	}
	if got := run.f.Position(); got != loadPos-1 || r.pos != loadPos-1 {
		t.Fatalf("follower stopped at %d (replay at %d), want %d (the position before the Load's)", got, r.pos, loadPos-1)
	}
	diffStates(t, r.state, beforeLoad) // everything before the Load was applied

	snap, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Position != loadPos {
		t.Fatalf("Snapshot.Position = %d, want the Load's %d", snap.Position, loadPos)
	}
	r2 := snapshotReplay(t, pool)
	run2 := follow(t, pool, url, snap.Position, r2)
	runWriters(t, pool, 2, 2, 5)
	waitPosition(t, run2, pool)
	if err := run2.stop(); err != nil {
		t.Fatalf("Run after the snapshot: %v", err)
	}
	_, state := dumpTables(t, pool)
	diffStates(t, r2.state, state)

	if err := ImportCatalogue(ctx, pool, testBuiltin(), model.Snapshot{}); err != nil {
		t.Fatalf("ImportCatalogue: %v", err)
	}
	changes, err := ReadChanges(ctx, pool, r2.pos, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Op != OpReload || changes[0].Position != r2.pos+1 {
		t.Fatalf("ImportCatalogue recorded %+v, want one reload at %d", changes, r2.pos+1)
	}
}
