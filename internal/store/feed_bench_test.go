package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// poolAtVersion is a pool (conns connections) on a fresh schema migrated up to version, with the invariant seed.
func poolAtVersion(b *testing.B, version int64, conns int32) *pgxpool.Pool {
	b.Helper()
	ctx := context.Background()
	base, url := testPool(b)
	provider, closeDB, err := newProvider(base)
	if err != nil {
		b.Fatal(err)
	}
	defer closeDB()
	if _, err := provider.UpTo(ctx, version); err != nil {
		b.Fatalf("migrating to %d: %v", version, err)
	}
	if err := Load(ctx, base, testBuiltin(), invariantSeed()); err != nil {
		b.Fatalf("Load: %v", err)
	}
	return openPool(b, url, conns, "keygate-bench")
}

// BenchmarkWriteThroughput measures 8 concurrent READ COMMITTED writers, each transaction a new user and its
// assignment (two statements and a commit), at four schema versions: 00003 (no invariants, no feed), 00004
// (the commit-time invariants), 00005 (the invariants and the feed's position and outbox) and 00006 (the feed's
// triggers first ask whether the transaction is a reload).
//
//	KEYGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	go test ./internal/store -run '^$' -bench WriteThroughput -benchtime 2000x
func BenchmarkWriteThroughput(b *testing.B) {
	const writers = 8
	for _, v := range []struct {
		name    string
		version int64
	}{{"00003_no_invariants_no_feed", 3}, {"00004_invariants", 4}, {"00005_invariants_and_feed", 5}, {"00006_feed_reload", 6}} {
		b.Run(v.name, func(b *testing.B) {
			pool := poolAtVersion(b, v.version, writers)
			ctx := context.Background()
			var next atomic.Int64
			var failed atomic.Value
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						u := fmt.Sprintf("u-bench-%d", i)
						err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
							if _, err := tx.Exec(ctx, `INSERT INTO users (id) VALUES ($1)`, u); err != nil {
								return err
							}
							_, err := tx.Exec(ctx, `INSERT INTO assignments (user_id, role_id, role_scope, org_id)
								VALUES ($1, 'r-user', 'organization', 'org-layer5')`, u)
							return err
						})
						if err != nil {
							failed.Store(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tx/s")
		})
	}
}

// BenchmarkLoadFeedCost measures Load of KEYGATE_BENCH_USERS users (default 100000; benchSeed) at schema
// versions 00003 (no invariants, no feed), 00004 (invariants), 00005 (the feed recording every row loaded) and
// 00006 (the feed recording a Load as one reload):
//
//	KEYGATE_TEST_DATABASE_URL=... go test ./internal/store -run '^$' -bench LoadFeedCost -benchtime 1x
func BenchmarkLoadFeedCost(b *testing.B) {
	n := benchUsers(b)
	seed := benchSeed(n)
	for _, v := range []struct {
		name    string
		version int64
	}{{"00003", 3}, {"00004", 4}, {"00005", 5}, {"00006", 6}} {
		b.Run(v.name, func(b *testing.B) {
			pool := poolAtVersion(b, v.version, 2)
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if err := Load(ctx, pool, testBuiltin(), seed); err != nil {
					b.Fatalf("Load: %v", err)
				}
			}
			b.ReportMetric(float64(n), "users")
		})
	}
}
