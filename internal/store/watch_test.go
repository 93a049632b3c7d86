package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	const url = "postgres://postgres@127.0.0.1:5432/test"
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" = valid; else the field the error must name
	}{
		{"defaults", Config{DatabaseURL: url}, ""},
		{"all set", Config{DatabaseURL: url, Debounce: time.Second, Rebuild: -1, MinBackoff: time.Second, MaxBackoff: time.Minute, Ping: time.Second}, ""},
		{"no url", Config{}, "database_url"},
		{"bad url", Config{DatabaseURL: "postgres://%zz"}, "database_url"},
		{"negative debounce", Config{DatabaseURL: url, Debounce: -time.Second}, "debounce"},
		{"negative backoff", Config{DatabaseURL: url, MinBackoff: -1}, "min_backoff"},
		{"max below min", Config{DatabaseURL: url, MinBackoff: time.Minute, MaxBackoff: time.Second}, "max_backoff"},
		{"negative ping", Config{DatabaseURL: url, Ping: -1}, "ping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want+":")):
				t.Errorf("Validate: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// startWatcher runs a watcher on dsn until the test ends; every onChange call is sent on the returned channel.
func startWatcher(t *testing.T, cfg Config) (*Watcher, <-chan struct{}) {
	t.Helper()
	calls := make(chan struct{}, 100)
	w, err := NewWatcher(cfg, func() { calls <- struct{}{} })
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return w, calls
}

func waitCall(t *testing.T, calls <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(within):
		t.Fatalf("onChange not called within %s %s", within, what)
	}
}

// quiet drains calls until none arrives for d.
func quiet(calls <-chan struct{}, d time.Duration) {
	for {
		select {
		case <-calls:
		case <-time.After(d):
			return
		}
	}
}

// The watcher tests are not parallel: notifications are database-wide, and other tests' loads would wake the
// watcher. Parallel tests of this package start only after them.

func TestWatchNotifiesCommittedChanges(t *testing.T) {
	ctx := context.Background()
	pool, dsn := migratedPool(t)
	_, calls := startWatcher(t, Config{DatabaseURL: dsn, Debounce: 50 * time.Millisecond, Rebuild: -1})
	waitCall(t, calls, 5*time.Second, "after connecting")
	quiet(calls, 300*time.Millisecond)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, id := range []string{"u-1", "u-2", "u-3"} {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id) VALUES ($1)`, id); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-calls:
		t.Fatal("onChange called before the change was committed")
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitCall(t, calls, 5*time.Second, "after a commit")
	select { // three statements in one transaction: one call
	case <-calls:
		t.Error("onChange called twice for one transaction")
	case <-time.After(300 * time.Millisecond):
	}
	if err := Load(ctx, pool, testBuiltin(), testSeed()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	waitCall(t, calls, 5*time.Second, "after a load")
}

func TestWatchReconnects(t *testing.T) {
	ctx := context.Background()
	pool, dsn := migratedPool(t)
	w, calls := startWatcher(t, Config{DatabaseURL: dsn, Debounce: 20 * time.Millisecond, Rebuild: -1,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	waitCall(t, calls, 5*time.Second, "after connecting")
	pid := w.PID()
	if pid == 0 {
		t.Fatal("PID = 0 after connecting")
	}
	quiet(calls, 200*time.Millisecond)

	var ok bool
	if err := pool.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
	}
	// A change while the listener is down is caught up by the call after reconnecting.
	if _, err := pool.Exec(ctx, `INSERT INTO users (id) VALUES ('u-during-outage')`); err != nil {
		t.Fatal(err)
	}
	waitCall(t, calls, 10*time.Second, "after the listener was terminated")
	deadline := time.Now().Add(10 * time.Second)
	for w.PID() == 0 || w.PID() == pid {
		if time.Now().After(deadline) {
			t.Fatalf("listener did not reconnect: PID %d (was %d)", w.PID(), pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	quiet(calls, 200*time.Millisecond)
	if _, err := pool.Exec(ctx, `INSERT INTO users (id) VALUES ('u-after')`); err != nil {
		t.Fatal(err)
	}
	waitCall(t, calls, 5*time.Second, "for a change after reconnecting")
}

func TestWatchRebuildTick(t *testing.T) {
	_, dsn := testPool(t)
	_, calls := startWatcher(t, Config{DatabaseURL: dsn, Rebuild: 100 * time.Millisecond})
	for range 3 {
		waitCall(t, calls, 2*time.Second, "by the rebuild tick")
	}
}

func TestWatchIgnoresOtherSchemas(t *testing.T) {
	ctx := context.Background()
	pool, url := migratedPool(t)
	other, _ := migratedPool(t)
	_, calls := startWatcher(t, Config{DatabaseURL: url, Debounce: 20 * time.Millisecond, Rebuild: -1})
	waitCall(t, calls, 5*time.Second, "after connecting")
	quiet(calls, 300*time.Millisecond)
	if _, err := other.Exec(ctx, `INSERT INTO users (id) VALUES ('u-elsewhere')`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-calls:
		t.Fatal("a change in another schema woke the watcher")
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := pool.Exec(ctx, `INSERT INTO users (id) VALUES ('u-here')`); err != nil {
		t.Fatal(err)
	}
	waitCall(t, calls, 5*time.Second, "after a change in its own schema")
}
