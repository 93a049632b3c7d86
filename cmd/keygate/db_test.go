package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/revision"
	"github.com/keygate/keygate/internal/store"
)

// testDatabaseURL returns the URL of a fresh schema of the test database, dropped when the test ends; it
// skips without KEYGATE_TEST_DATABASE_URL (and fails under CI).
func testDatabaseURL(t *testing.T) string {
	t.Helper()
	_, _, url := pgtest.Schema(t, "keygate_cmd")
	return url
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("keygate %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

func TestDatabaseCommands(t *testing.T) {
	t.Parallel()
	db := testDatabaseURL(t)
	if out := runOK(t, "migrate", "--database-url", db); !strings.Contains(out, "applied 00001_schema.sql\n") ||
		!regexp.MustCompile(`migration\(s\) applied\n$`).MatchString(out) {
		t.Errorf("first migrate does not say what it applied: %q", out)
	}
	if out := runOK(t, "migrate", "--database-url", db); out != "schema up to date: no migration to apply\n" {
		t.Errorf("second migrate: %q", out)
	}
	if out := runOK(t, "db", "load", "--database-url", db); !strings.Contains(out, "embedded demo") {
		t.Errorf("db load: %q", out)
	}

	t.Run("the database builds the demo's content at its commit position", func(t *testing.T) {
		ctx := context.Background()
		pool, err := store.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		// A commit after the load: the position moves on, the content is the demo's again.
		if _, err := pool.Exec(ctx, `UPDATE users SET email = email WHERE id = (SELECT min(id) FROM users)`); err != nil {
			t.Fatal(err)
		}
		latest, err := store.LatestPosition(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		got, err := revision.Parse(buildRevision(t, "--database-url", db))
		if err != nil {
			t.Fatal(err)
		}
		want, err := revision.Parse(buildRevision(t))
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != want.Hash || got.Position != latest || latest < 2 || want.Position != 0 {
			t.Fatalf("revision from the database %s at position %d, want %s at keygate_position() %d (the embedded demo's at 0: %d)",
				got.Hash, got.Position, want.Hash, latest, want.Position)
		}
	})
	t.Run("serve from the database serves the same revision", func(t *testing.T) {
		etag, stop := serveUntilReady(t, freeAddr(t), "--database-url", db, "--rebuild-interval", "-1s")
		stop()
		// The same content hash, at the database's commit position (the load's; a seed file's is 0).
		got, err := revision.Parse(strings.Trim(etag, `"`))
		if err != nil {
			t.Fatal(err)
		}
		want, err := revision.Parse(buildRevision(t))
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != want.Hash || got.Position == 0 {
			t.Fatalf("ETag %s, want %s at the database's position (> 0)", etag, want.Hash)
		}
	})
	t.Run("db load --seed loads a seed file", func(t *testing.T) {
		if out := runOK(t, "db", "load", "--seed", demoSeedFile(t), "--database-url", db); !strings.Contains(out, "loaded seed") {
			t.Errorf("db load --seed: %q", out)
		}
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"db", "load", "--seed", "/nonexistent.yaml", "--database-url", db}, &out, &errb); code == 0 {
			t.Fatal("loading a missing seed file succeeded")
		}
	})
	t.Run("import keys into the database", func(t *testing.T) {
		ctx := context.Background()
		key := model.Key{ID: "0f3c8a2e-0000-4000-8000-000000000001", Name: "Imported Test Key", Category: "Test", Function: "read"}
		if err := importKeysToDatabase(ctx, db, model.Snapshot{Keys: []model.Key{key}}); err != nil {
			t.Fatal(err)
		}
		snap, err := databaseSnapshot(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, k := range snap.Keys {
			found = found || (k.ID == key.ID && k.Name == key.Name)
		}
		if !found {
			t.Fatalf("imported key not in the snapshot")
		}
		// A catalogue that does not validate (a keychain naming an unknown key) is refused, nothing written.
		err = importKeysToDatabase(ctx, db, model.Snapshot{Keychains: []model.Keychain{{ID: "kc-x", Name: "X", Keys: []string{"no such key"}}}})
		var ve *model.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("import of a bad catalogue: %v, want a validation error", err)
		}
	})
}

func TestDatabaseCommandsNeedAURL(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"migrate", "--database-url", ""}, // overrides $KEYGATE_DATABASE_URL
		{"db", "load", "--database-url", ""},
		{"migrate", "--database-url", "postgres://h:bad/db"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--database-url") {
			t.Errorf("keygate %v: exit %d %q, want 2 naming --database-url", args, code, errb.String())
		}
	}
}

// TestImportKeysIntoTheDatabase: the public catalogue (keys, grants, keychains) goes into a database holding the
// demo, which keeps its data; the imported grants then decide.
func TestImportKeysIntoTheDatabase(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "..", "shared", "data")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("public catalogue not found: %v", err)
		}
		t.Skipf("public catalogue not found: %v", err)
	}
	db := testDatabaseURL(t)
	runOK(t, "migrate", "--database-url", db)
	runOK(t, "db", "load", "--database-url", db)
	if out := runOK(t, "import-keys", dir, "--database-url", db); !strings.Contains(out, "imported 466 keys, 1112 grants") {
		t.Errorf("import-keys: %q", out)
	}
	// The demo's data is still there, and a key only the public catalogue has resolves.
	code, stdout, stderr := runCmd(t, "check", "--database-url", db, "--user", "u-alice", "--org", "org-layer5", "--key", "View All Teams")
	if code != 0 {
		t.Fatalf("demo decision after the import: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, _ = runCmd(t, "check", "--database-url", db, "--user", "u-heidi", "--org", "org-layer5", "--key", "Manage Subscriptions")
	if !strings.Contains(stdout, "01462c43-dfa8-4a5e-805a-267c9b0ec7ec") {
		t.Errorf("the imported key does not resolve (exit %d): %s", code, stdout)
	}
}

// TestImportKeysDatabaseURLFromEnv: without -o or --database-url, import-keys writes into
// $KEYGATE_DATABASE_URL, as every database command does. (Not parallel: it sets the environment.)
func TestImportKeysDatabaseURLFromEnv(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "data")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("public catalogue not found: %v", err)
		}
		t.Skipf("public catalogue not found: %v", err)
	}
	db := testDatabaseURL(t)
	runOK(t, "migrate", "--database-url", db)
	t.Setenv("KEYGATE_DATABASE_URL", db)
	if out := runOK(t, "import-keys", dir); !strings.Contains(out, "imported 466 keys") {
		t.Errorf("import-keys: %q", out)
	}
	code, stdout, stderr := runCmd(t, "check", "--user", "u-heidi", "--org", "org-layer5", "--key", "Manage Subscriptions")
	if !strings.Contains(stdout, "01462c43-dfa8-4a5e-805a-267c9b0ec7ec") {
		t.Errorf("the imported key is not in the database named by the environment (exit %d): %s %s", code, stdout, stderr)
	}
}
