package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keygate/keygate/internal/model"
)

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testPool(t)

	t.Run("up from empty and idempotent", func(t *testing.T) {
		for range 2 {
			if err := Migrate(ctx, pool); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename NOT LIKE 'keygate\_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if want := 17 + 1; n != want { // entity tables + goose_db_version (keygate_*: the invariants' and the feed's)
			t.Errorf("tables in schema = %d, want %d", n, want)
		}
	})
	t.Run("down and up again", func(t *testing.T) {
		provider, closeDB, err := newProvider(pool)
		if err != nil {
			t.Fatal(err)
		}
		defer closeDB()
		if _, err := provider.DownTo(ctx, 0); err != nil {
			t.Fatalf("DownTo(0): %v", err)
		}
		if _, err := provider.Up(ctx); err != nil {
			t.Fatalf("Up: %v", err)
		}
	})
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := migratedPool(t)
	builtin, seed := testBuiltin(), testSeed()
	if err := Load(ctx, pool, builtin, seed); err != nil {
		t.Fatalf("Load: %v", err)
	}
	snap, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	got := normalized(t, mustResolve(t, builtin, snap))
	want := normalized(t, mustResolve(t, builtin, seed))
	if got != want {
		t.Errorf("Resolve(Snapshot(Load(seed))) differs from Resolve(seed)\n got:\n%s\nwant:\n%s", got, want)
	}

	t.Run("stores ids, not names", func(t *testing.T) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM assignments WHERE role_id = 'r-auditor' AND org_id = 'o-acme'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("assignment of Auditor by name: %d rows with role_id r-auditor, want 1", n)
		}
	})
	t.Run("reads are deterministic", func(t *testing.T) {
		again, err := Snapshot(ctx, pool)
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		a, _ := json.Marshal(snap)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Errorf("two snapshots of the same data differ:\n%s\n%s", a, b)
		}
	})
	t.Run("reloading gives the same snapshot", func(t *testing.T) {
		if err := Load(ctx, pool, builtin, snap); err != nil {
			t.Fatalf("Load(snapshot): %v", err)
		}
		again, err := Snapshot(ctx, pool)
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		a, _ := json.Marshal(snap)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Errorf("snapshot after reload differs:\n%s\n%s", a, b)
		}
	})
	t.Run("empty seed", func(t *testing.T) {
		if err := Load(ctx, pool, builtin, model.Snapshot{}); err != nil {
			t.Fatalf("Load(empty): %v", err)
		}
		snap, err := Snapshot(ctx, pool)
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		if got, want := normalized(t, mustResolve(t, builtin, snap)), normalized(t, mustResolve(t, builtin, model.Snapshot{})); got != want {
			t.Errorf("empty seed round trip:\n got:\n%s\nwant:\n%s", got, want)
		}
		if len(snap.Users)+len(snap.Roles)+len(snap.Keychains) != 0 {
			t.Errorf("snapshot of an empty seed holds data: %+v", snap)
		}
	})
}

func TestLoadAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := migratedPool(t)
	builtin := testBuiltin()
	if err := Load(ctx, pool, builtin, testSeed()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	before, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}

	dangling := testSeed()
	dangling.Users = dangling.Users[1:] // u-alice owns o-acme, t-acme-dev, ...
	// Valid for the validator, refused by PostgreSQL (text cannot hold NUL) at the last table written.
	nul := testSeed()
	nul.Routes = append(nul.Routes, model.Route{Service: "x\x00", Method: "GET", Path: "/x", Key: "Edit User"})
	for _, tc := range []struct {
		name       string
		seed       model.Snapshot
		validation bool
	}{
		{"refused by the validator", dangling, true},
		{"refused by the database after writing", nul, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Load(ctx, pool, builtin, tc.seed)
			if err == nil {
				t.Fatal("Load of a bad seed succeeded")
			}
			var verr *model.ValidationError
			if got := errors.As(err, &verr); got != tc.validation {
				t.Errorf("Load error %q: is a *model.ValidationError = %v, want %v", err, got, tc.validation)
			}
			after, err := Snapshot(ctx, pool)
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			a, _ := json.Marshal(before)
			b, _ := json.Marshal(after)
			if string(a) != string(b) {
				t.Errorf("a failed Load changed the database:\nbefore %s\nafter  %s", a, b)
			}
		})
	}
}

// TestConstraints checks the database refuses, on its own, what the validator refuses.
func TestConstraints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := migratedPool(t)
	if err := Load(ctx, pool, testBuiltin(), testSeed()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	const (
		unique = "23505"
		fk     = "23503"
		check  = "23514"
	)
	for _, tc := range []struct {
		name, sql, code, constraint string
	}{
		{"duplicate user id", `INSERT INTO users (id) VALUES ('u-alice')`, unique, "users_pkey"},
		{"empty id", `INSERT INTO users (id) VALUES ('')`, check, "users_id_check"},
		{"unknown plan", `INSERT INTO users (id, plan) VALUES ('u-x', 'gold')`, check, "users_plan_check"},
		{"organization owner unknown", `INSERT INTO organizations VALUES ('o-x', 'X', 'u-nobody')`, fk, "organizations_owner_id_fkey"},
		{"team of unknown organization", `INSERT INTO teams VALUES ('t-x', 'o-nope', 'X', 'u-alice')`, fk, "teams_org_id_fkey"},
		{"team member unknown", `INSERT INTO team_members VALUES ('t-acme-dev', 'u-nobody')`, fk, "team_members_user_id_fkey"},
		{"duplicate team member", `INSERT INTO team_members VALUES ('t-acme-dev', 'u-bob')`, unique, "team_members_pkey"},
		{"workspace team unknown", `INSERT INTO workspace_teams VALUES ('w-acme', 't-nope')`, fk, "workspace_teams_team_id_fkey"},
		{"keychain key unknown", `INSERT INTO keychain_keys VALUES ('kc-catalog', 'k-nope')`, fk, "keychain_keys_key_id_fkey"},
		{"keychain of unknown organization", `INSERT INTO keychains (id, name, org_id) VALUES ('kc-x', 'X', 'o-nope')`, fk, "keychains_org_id_fkey"},
		{"unknown scope", `INSERT INTO roles (id, name, scope) VALUES ('r-x', 'X', 'galaxy')`, check, "roles_scope_check"},
		{"organization role with provider scope", `INSERT INTO roles (id, name, scope, org_id) VALUES ('r-x', 'X', 'provider', 'o-acme')`, check, "roles_provider_scope_check"},
		{"new role named like a default role", `INSERT INTO roles (id, name, scope) VALUES ('r-x', 'User', 'organization')`, unique, "roles_default_name"},
		{"role with another organization's keychain", `INSERT INTO role_keychains VALUES ('r-user', '', 'kc-acme', 'o-acme', true)`, check, "role_keychains_org_check"},
		{"role keychain with a false org", `INSERT INTO role_keychains VALUES ('r-user', '', 'kc-acme', '', true)`, fk, "role_keychains_keychain_id_keychain_org_key_fkey"},
		{"owner-only key not in the role's keychains", `INSERT INTO role_owner_only VALUES ('r-auditor', 'k-approve', false)`, fk, "role_owner_only_held"},
		{"unknown visibility", `INSERT INTO designs VALUES ('d-x', 'w-acme', 'u-alice', 'secret')`, check, "designs_visibility_check"},
		{"design in unknown workspace", `INSERT INTO designs VALUES ('d-x', 'w-nope', 'u-alice', 'public')`, fk, "designs_workspace_id_fkey"},
		{"assignment of unknown role", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-carol', 'r-nope', 'organization', 'o-acme')`, fk, "assignments_role_id_role_scope_role_org_key_fkey"},
		{"assignment claiming the wrong scope", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-carol', 'r-team-admin', 'organization', 'o-acme')`, fk, "assignments_role_id_role_scope_role_org_key_fkey"},
		{"team role without team", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-carol', 'r-team-admin', 'team', 'o-acme')`, check, "assignments_scope_check"},
		{"team role with a workspace", `INSERT INTO assignments (user_id, role_id, role_scope, org_id, team_id, workspace_id) VALUES ('u-carol', 'r-team-admin', 'team', 'o-acme', 't-acme-dev', 'w-acme')`, check, "assignments_scope_check"},
		{"workspace role without workspace", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-carol', 'r-ws-admin', 'workspace', 'o-acme')`, check, "assignments_scope_check"},
		{"organization role without organization", `INSERT INTO assignments (user_id, role_id, role_scope) VALUES ('u-carol', 'r-user', 'organization')`, check, "assignments_scope_check"},
		{"provider role with an organization", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-carol', 'r-provider-admin', 'provider', 'o-acme')`, check, "assignments_scope_check"},
		{"team of another organization", `INSERT INTO assignments (user_id, role_id, role_scope, org_id, team_id) VALUES ('u-carol', 'r-team-admin', 'team', 'o-acme', 't-globex-ops')`, fk, "assignments_team_org_fkey"},
		{"workspace of another organization", `INSERT INTO assignments (user_id, role_id, role_scope, org_id, workspace_id) VALUES ('u-carol', 'r-ws-admin', 'workspace', 'o-globex', 'w-acme')`, fk, "assignments_workspace_org_fkey"},
		{"organization role of another organization", `INSERT INTO assignments (user_id, role_id, role_scope, role_org_key, org_id) VALUES ('u-carol', 'r-auditor', 'organization', 'o-acme', 'o-globex')`, check, "assignments_role_org_check"},
		{"organization role hiding its organization", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-carol', 'r-auditor', 'organization', 'o-globex')`, fk, "assignments_role_id_role_scope_role_org_key_fkey"},
		{"duplicate assignment", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-alice', 'r-org-admin', 'organization', 'o-acme')`, unique, "assignments_unique"},
		{"duplicate provider assignment", `INSERT INTO assignments (user_id, role_id, role_scope) VALUES ('u-alice', 'r-provider-admin', 'provider')`, unique, "assignments_unique"},
		{"free-plan user in a second organization", `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-bob', 'r-user', 'organization', 'o-globex')`, check, "users_free_plan_single_org"},
		{"multi-organization user moved to free plan", `UPDATE users SET plan = 'free' WHERE id = 'u-carol'`, check, "users_free_plan_single_org"},
		{"token of unknown user", `INSERT INTO tokens (id, user_id) VALUES ('tok-x', 'u-nobody')`, fk, "tokens_user_id_fkey"},
		{"route with unknown key", `INSERT INTO routes (service, method, path, key_id) VALUES ('s', 'GET', '/x', 'k-nope')`, fk, "routes_key_id_fkey"},
		{"route method not upper case", `INSERT INTO routes (service, method, path, key_id) VALUES ('s', 'get', '/x', 'k-edit-user')`, check, "routes_method_check"},
		{"route relative path", `INSERT INTO routes (service, method, path, key_id) VALUES ('s', 'GET', 'x', 'k-edit-user')`, check, "routes_path_check"},
		{"route org_from not in path", `INSERT INTO routes (service, method, path, key_id, org_from) VALUES ('s', 'GET', '/x/{id}', 'k-edit-user', 'org')`, check, "routes_org_from_check"},
		{"route unknown resource type", `INSERT INTO routes (service, method, path, key_id, resource) VALUES ('s', 'GET', '/x/{id}', 'k-edit-user', 'planet:id')`, check, "routes_resource_check"},
		{"duplicate route", `INSERT INTO routes (service, method, path, key_id) VALUES ('catalog', 'POST', '/api/catalog/requests/{id}/approve', 'k-edit-user')`, unique, "routes_pkey"},
		{"key alias empty", `INSERT INTO keys (id, name, aliases) VALUES ('k-x', 'X', '{""}')`, check, "keys_aliases_check"},
		{"system key renamed", `UPDATE keys SET name = 'Renamed' WHERE id = 'k-edit-user'`, check, "keys_system_immutable"},
		{"system key deleted", `DELETE FROM keys WHERE id = 'k-create-org'`, check, "keys_system_immutable"},
		{"system key made ordinary", `UPDATE keys SET system = false WHERE id = 'k-edit-user'`, check, "keys_system_immutable"},
		{"deleted flag set directly", `UPDATE users SET deleted = true WHERE id = 'u-bob'`, "428C9", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			_, err = tx.Exec(ctx, tc.sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("%s: got error %v, want SQLSTATE %s (%s)", tc.sql, err, tc.code, tc.constraint)
			}
			if pgErr.Code != tc.code || pgErr.ConstraintName != tc.constraint {
				t.Errorf("got SQLSTATE %s constraint %q (%s), want %s %q", pgErr.Code, pgErr.ConstraintName, pgErr.Message, tc.code, tc.constraint)
			}
		})
	}
	t.Run("valid rows are accepted", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		for _, sql := range []string{
			`UPDATE keys SET category = 'Catalog requests' WHERE id = 'k-approve'`, // not a system key
			`INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-bob', 'r-org-admin', 'organization', 'o-acme')`,
			`INSERT INTO assignments (user_id, role_id, role_scope, role_org_key, org_id) VALUES ('u-alice', 'r-auditor', 'organization', 'o-acme', 'o-acme')`,
			`INSERT INTO workspace_members VALUES ('w-acme', 'u-bob')`, // another org's users and teams are fine
			`UPDATE users SET deleted_at = now() WHERE id = 'u-bob'`,
			`INSERT INTO keys (id, name) VALUES ('k-new', 'New')`,
			`DELETE FROM keys WHERE id = 'k-new'`, // not a system key
		} {
			if _, err := tx.Exec(ctx, sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
	})
}

func TestImportKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := migratedPool(t)
	builtin := testBuiltin()
	catalogue := []model.Key{
		{ID: "k-edit-user", Name: "Edit Users", Category: "Identity", Function: "update"},
		{ID: "k-view-designs", Name: "View Designs", Category: "Design", Function: "read", Aliases: []string{"See Designs"}},
	}
	for range 2 { // idempotent
		if err := ImportKeys(ctx, pool, catalogue); err != nil {
			t.Fatalf("ImportKeys: %v", err)
		}
	}
	// A seed may name imported keys; the load keeps them.
	seed := testSeed()
	seed.Keychains = append(seed.Keychains, model.Keychain{ID: "kc-designs", Name: "Designs", Keys: []string{"See Designs"}})
	if err := Load(ctx, pool, builtin, seed); err != nil {
		t.Fatalf("Load after ImportKeys: %v", err)
	}
	if err := ImportKeys(ctx, pool, catalogue); err != nil {
		t.Fatalf("ImportKeys after Load: %v", err)
	}
	snap, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	m := mustResolve(t, builtin, snap)
	k, ok := m.Key("k-view-designs")
	if !ok || !k.System || k.Category != "Design" {
		t.Errorf("imported key = %+v, %v; want a system key of category Design", k, ok)
	}
	if id := m.KeyNames["Edit Users"]; id != "k-edit-user" {
		t.Errorf("catalogue name of a stored key resolves to %q, want k-edit-user (an alias)", id)
	}
	if k, _ := m.Key("k-edit-user"); k.Name != "Edit User" {
		t.Errorf("import renamed stored key to %q", k.Name)
	}
	if _, err := pool.Exec(ctx, `UPDATE keys SET category = 'x' WHERE id = 'k-view-designs'`); err == nil {
		t.Error("an imported key is mutable")
	}
	if err := ImportKeys(ctx, pool, []model.Key{{ID: "k-1", Name: "A"}, {ID: "k-1", Name: "B"}}); err == nil ||
		!strings.Contains(err.Error(), "keys[1]") {
		t.Errorf("ImportKeys of duplicate ids: %v, want an error naming keys[1]", err)
	}
}

// TestSnapshotDuringLoads checks a snapshot taken while loads commit is always one whole seed or the other.
func TestSnapshotDuringLoads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := migratedPool(t)
	builtin := testBuiltin()
	a, b := testSeed(), testSeed()
	b.Users = append(b.Users, model.User{ID: "u-zed", Plan: model.PlanFree})
	b.Assignments = append(b.Assignments, model.Assignment{User: "u-zed", Role: model.RoleUser, Org: "o-globex"})
	want := map[string]bool{
		normalized(t, mustResolve(t, builtin, a)): true,
		normalized(t, mustResolve(t, builtin, b)): true,
	}
	if err := Load(ctx, pool, builtin, a); err != nil {
		t.Fatalf("Load: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range 10 {
			seed := a
			if i%2 == 0 {
				seed = b
			}
			if err := Load(ctx, pool, builtin, seed); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for reads := 0; ; reads++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			t.Logf("%d consistent snapshots during 10 loads", reads)
			return
		default:
		}
		snap, err := Snapshot(ctx, pool)
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		m, err := model.Resolve(builtin, snap)
		if err != nil {
			t.Fatalf("snapshot taken during a load does not resolve: %v", err)
		}
		if got := normalized(t, m); !want[got] {
			t.Fatalf("snapshot taken during a load is neither seed:\n%s", got)
		}
	}
}

// A seed's settings cannot be stored: Load refuses them before touching the database (nil pool).
func TestLoadRefusesSettings(t *testing.T) {
	t.Parallel()
	err := Load(context.Background(), nil, model.Snapshot{}, model.Snapshot{Settings: model.Settings{AssignKeySubset: true}})
	if err == nil || !strings.Contains(err.Error(), "assign_key_subset") {
		t.Fatalf("Load = %v, want an error naming assign_key_subset", err)
	}
}
