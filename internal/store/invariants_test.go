package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keygate/keygate/internal/model"
)

// invariantSeed: org-layer5 has two live Organization Admins (and a soft-deleted one), org-meshery one; two
// live Provider Admins; u-oscar is on the Free plan in org-layer5, u-nina on it in none, u-carol on the Team plan in org-layer5 only.
func invariantSeed() model.Snapshot {
	return model.Snapshot{
		Users: []model.User{
			{ID: "u-alice"}, {ID: "u-bob"}, {ID: "u-carol"}, {ID: "u-mallory"}, {ID: "u-peggy"}, {ID: "u-pat"},
			{ID: "u-oscar", Plan: model.PlanFree}, {ID: "u-nina", Plan: model.PlanFree}, {ID: "u-trent", Deleted: true},
		},
		Organizations: []model.Organization{
			{ID: "org-layer5", Name: "Layer5", Owner: "u-alice"},
			{ID: "org-meshery", Name: "Meshery", Owner: "u-mallory"},
			{ID: "org-other", Name: "Other", Owner: "u-mallory"},
		},
		Assignments: []model.Assignment{
			{User: "u-alice", Role: model.RoleOrganizationAdmin, Org: "org-layer5"},
			{User: "u-bob", Role: model.RoleOrganizationAdmin, Org: "org-layer5"},
			{User: "u-trent", Role: model.RoleOrganizationAdmin, Org: "org-layer5"},
			{User: "u-mallory", Role: model.RoleOrganizationAdmin, Org: "org-meshery"},
			{User: "u-mallory", Role: model.RoleOrganizationAdmin, Org: "org-other"},
			{User: "u-oscar", Role: model.RoleUser, Org: "org-layer5"},
			{User: "u-carol", Role: model.RoleUser, Org: "org-layer5"},
			{User: "u-peggy", Role: model.RoleProviderAdmin},
			{User: "u-pat", Role: model.RoleProviderAdmin},
		},
	}
}

func invariantPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, _ := migratedPool(t)
	if err := Load(context.Background(), pool, testBuiltin(), invariantSeed()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return pool
}

// wantViolation checks err is PostgreSQL's refusal naming constraint, with a message containing text.
func wantViolation(t *testing.T, err error, constraint, text string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("got error %v, want a violation of %s", err, constraint)
	}
	if pgErr.Code != "23514" || pgErr.ConstraintName != constraint || !strings.Contains(pgErr.Message, text) {
		t.Fatalf("got SQLSTATE %s constraint %q: %s; want 23514 %q with %q", pgErr.Code, pgErr.ConstraintName,
			pgErr.Message, constraint, text)
	}
}

// race runs two READ COMMITTED transactions on two connections: each runs its statements, then waits until the
// other has run its own, then both commit at once. It returns the two commits' errors (a statement's error
// fails the test).
func race(t *testing.T, pool *pgxpool.Pool, a, b []string) [2]error {
	t.Helper()
	ctx := context.Background()
	var acted sync.WaitGroup
	acted.Add(2)
	var done sync.WaitGroup
	var errs [2]error
	for i, stmts := range [][]string{a, b} {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
		if err != nil {
			t.Fatal(err)
		}
		done.Go(func() {
			defer func() { _ = tx.Rollback(ctx) }()
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					errs[i] = err
					acted.Done()
					return
				}
			}
			acted.Done()
			acted.Wait() // both have written, neither has committed
			errs[i] = tx.Commit(ctx)
		})
	}
	done.Wait()
	return errs
}

// oneFails checks exactly one of two racing commits failed, with the named violation.
func oneFails(t *testing.T, errs [2]error, constraint, text string) {
	t.Helper()
	switch {
	case errs[0] == nil && errs[1] == nil:
		t.Fatalf("both transactions committed: %s was not enforced", constraint)
	case errs[0] != nil && errs[1] != nil:
		t.Fatalf("both transactions failed: %v; %v", errs[0], errs[1])
	case errs[0] != nil:
		wantViolation(t, errs[0], constraint, text)
	default:
		wantViolation(t, errs[1], constraint, text)
	}
}

const (
	delAlice = `DELETE FROM assignments WHERE user_id = 'u-alice' AND role_id = 'r-org-admin' AND org_id = 'org-layer5'`
	delBob   = `DELETE FROM assignments WHERE user_id = 'u-bob' AND role_id = 'r-org-admin' AND org_id = 'org-layer5'`
	delPeggy = `DELETE FROM assignments WHERE user_id = 'u-peggy' AND role_scope = 'provider'`
	delPat   = `DELETE FROM assignments WHERE user_id = 'u-pat' AND role_scope = 'provider'`
)

func assign(user, role, org string) string {
	return `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('` + user + `', '` + role +
		`', 'organization', '` + org + `')`
}

// TestInvariantRaces: two concurrent READ COMMITTED writers, each harmless alone, together breaking an
// invariant: exactly one commits.
func TestInvariantRaces(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		a, b       []string
		constraint string
		text       string
	}{
		{"each unassigns one of the last two Organization Admins", []string{delAlice}, []string{delBob},
			"organizations_live_org_admin", "organization org-layer5 would have no live Organization Admin"},
		{"one soft-deletes an admin, the other unassigns the other", []string{`UPDATE users SET deleted_at = now() WHERE id = 'u-alice'`},
			[]string{delBob}, "organizations_live_org_admin", "organization org-layer5 would have no live Organization Admin"},
		{"each demotes one of the last two admins to User", []string{`UPDATE assignments SET role_id = 'r-user' WHERE user_id = 'u-alice' AND role_id = 'r-org-admin'`},
			[]string{`UPDATE assignments SET role_id = 'r-user' WHERE user_id = 'u-bob' AND role_id = 'r-org-admin'`},
			"organizations_live_org_admin", "org-layer5"},
		{"each unassigns one of the last two Provider Admins", []string{delPeggy}, []string{delPat},
			"keygate_live_provider_admin", "the system would have no live Provider Admin"},
		{"each soft-deletes one of the last two Provider Admins", []string{`UPDATE users SET deleted_at = now() WHERE id = 'u-peggy'`},
			[]string{`UPDATE users SET deleted_at = now() WHERE id = 'u-pat'`}, "keygate_live_provider_admin", "Provider Admin"},
		{"a Free-plan user without an organization given roles in two at once",
			[]string{assign("u-nina", "r-user", "org-meshery")}, []string{assign("u-nina", "r-user", "org-other")},
			"users_free_plan_single_org", "user u-nina"},
		{"a user moved to the Free plan while given a second organization",
			[]string{`UPDATE users SET plan = 'free' WHERE id = 'u-carol'`}, []string{assign("u-carol", "r-user", "org-meshery")},
			"users_free_plan_single_org", "user u-carol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := invariantPool(t)
			before, err := Snapshot(context.Background(), pool)
			if err != nil {
				t.Fatal(err)
			}
			oneFails(t, race(t, pool, tc.a, tc.b), tc.constraint, tc.text)
			// And the winner's change is there: the database moved from the seed.
			after, err := Snapshot(context.Background(), pool)
			if err != nil {
				t.Fatal(err)
			}
			if normalized(t, mustResolve(t, testBuiltin(), before)) == normalized(t, mustResolve(t, testBuiltin(), after)) {
				t.Error("neither transaction's change is in the database")
			}
		})
	}
	t.Run("REPEATABLE READ writers race too: one gets a serialization failure or the violation", func(t *testing.T) {
		t.Parallel()
		pool := invariantPool(t)
		ctx := context.Background()
		var acted, done sync.WaitGroup
		acted.Add(2)
		var errs [2]error
		for i, stmt := range []string{delAlice, delBob} {
			tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
			if err != nil {
				t.Fatal(err)
			}
			done.Go(func() {
				defer func() { _ = tx.Rollback(ctx) }()
				_, errs[i] = tx.Exec(ctx, stmt)
				acted.Done()
				acted.Wait()
				if errs[i] == nil {
					errs[i] = tx.Commit(ctx)
				}
			})
		}
		done.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("want exactly one failure, got %v; %v", errs[0], errs[1])
		}
		err := errors.Join(errs[0], errs[1])
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "40001" && pgErr.ConstraintName != "organizations_live_org_admin") {
			t.Fatalf("got %v, want a serialization failure or organizations_live_org_admin", err)
		}
	})
}

// TestInvariantsOneTransaction: the writes that can break an invariant, each alone, and the ones that keep it.
func TestInvariantsOneTransaction(t *testing.T) {
	t.Parallel()
	pool := invariantPool(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		stmts      []string
		constraint string // "" means the transaction commits
		text       string
	}{
		{"unassigning one of two admins", []string{delAlice}, "", ""},
		{"unassigning both admins", []string{delAlice, delBob}, "organizations_live_org_admin",
			"organization org-layer5 would have no live Organization Admin"},
		{"unassigning the last admin and assigning another", []string{delAlice, delBob, assign("u-carol", "r-org-admin", "org-layer5")}, "", ""},
		{"soft-deleting the last live admin", []string{delAlice, `UPDATE users SET deleted_at = now() WHERE id = 'u-bob'`},
			"organizations_live_org_admin", "org-layer5"},
		{"the deleted admin does not count", []string{delAlice, delBob, `UPDATE users SET deleted_at = NULL WHERE id = 'u-trent'`}, "", ""},
		{"demoting the last admin", []string{`UPDATE assignments SET role_id = 'r-user' WHERE user_id = 'u-mallory' AND org_id = 'org-meshery'`},
			"organizations_live_org_admin", "org-meshery"},
		{"moving the last admin's assignment to another org", []string{`UPDATE assignments SET org_id = 'org-layer5' WHERE user_id = 'u-mallory' AND org_id = 'org-meshery'`},
			"organizations_live_org_admin", "org-meshery"},
		{"handing the admin over to another user", []string{`UPDATE assignments SET user_id = 'u-carol' WHERE user_id = 'u-mallory' AND org_id = 'org-meshery'`}, "", ""},
		{"a new organization without an admin", []string{`INSERT INTO organizations VALUES ('org-new', 'New', 'u-carol')`},
			"organizations_live_org_admin", "organization org-new would have no live Organization Admin"},
		{"a new organization with its admin", []string{`INSERT INTO organizations VALUES ('org-new', 'New', 'u-carol')`, assign("u-carol", "r-org-admin", "org-new")}, "", ""},
		{"a new organization whose admin is soft-deleted", []string{`INSERT INTO organizations VALUES ('org-new', 'New', 'u-trent')`, assign("u-trent", "r-org-admin", "org-new")},
			"organizations_live_org_admin", "org-new"},
		{"deleting an organization with its assignments", []string{`DELETE FROM assignments WHERE org_id = 'org-meshery'`, `DELETE FROM organizations WHERE id = 'org-meshery'`}, "", ""},
		{"renaming the Organization Admin role", []string{`UPDATE roles SET name = 'Org Boss' WHERE id = 'r-org-admin'`},
			"organizations_live_org_admin", "would have no live Organization Admin"},
		{"unassigning one of two Provider Admins", []string{delPeggy}, "", ""},
		{"unassigning both Provider Admins", []string{delPeggy, delPat}, "keygate_live_provider_admin", "the system would have no live Provider Admin"},
		{"soft-deleting the last Provider Admin", []string{delPeggy, `UPDATE users SET deleted_at = now() WHERE id = 'u-pat'`},
			"keygate_live_provider_admin", "Provider Admin"},
		{"replacing the last Provider Admin", []string{delPeggy, delPat, `INSERT INTO assignments (user_id, role_id, role_scope) VALUES ('u-carol', 'r-provider-admin', 'provider')`}, "", ""},
		{"renaming the Provider Admin role", []string{`UPDATE roles SET name = 'Root' WHERE id = 'r-provider-admin'`},
			"keygate_live_provider_admin", "Provider Admin"},
		{"a Free-plan user's second organization (refused at once by 00002's statement check)", []string{assign("u-oscar", "r-user", "org-meshery")},
			"users_free_plan_single_org", "u-oscar"},
		{"a Free-plan user moving organization", []string{`DELETE FROM assignments WHERE user_id = 'u-oscar'`, assign("u-oscar", "r-user", "org-meshery")}, "", ""},
		{"checked at once under SET CONSTRAINTS IMMEDIATE", []string{`SET CONSTRAINTS keygate_commit_hook IMMEDIATE`, delAlice, delBob},
			"organizations_live_org_admin", "org-layer5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			var stmtErr error
			for _, s := range tc.stmts {
				if _, stmtErr = tx.Exec(ctx, s); stmtErr != nil {
					break
				}
			}
			err = stmtErr
			if err == nil {
				err = tx.Commit(ctx)
			}
			if tc.constraint == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				// Put the seed back for the next case.
				if err := Load(ctx, pool, testBuiltin(), invariantSeed()); err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			wantViolation(t, err, tc.constraint, tc.text)
		})
	}
	t.Run("the check runs at commit, not per statement", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		for _, s := range []string{delAlice, delBob} {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v (want the check deferred to commit)", s, err)
			}
		}
		wantViolation(t, tx.Commit(ctx), "organizations_live_org_admin", "org-layer5")
	})
}

// TestInvariantsLoad: a Load is checked like any writer: valid data loads, data breaking an invariant is refused
// naming it and changes nothing.
func TestInvariantsLoad(t *testing.T) {
	t.Parallel()
	pool := invariantPool(t)
	ctx := context.Background()
	before, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	drop := func(pred func(model.Assignment) bool) model.Snapshot {
		s := invariantSeed()
		var kept []model.Assignment
		for _, a := range s.Assignments {
			if !pred(a) {
				kept = append(kept, a)
			}
		}
		s.Assignments = kept
		return s
	}
	deletedAdmins := invariantSeed()
	for i := range deletedAdmins.Users {
		if u := &deletedAdmins.Users[i]; u.ID == "u-alice" || u.ID == "u-bob" {
			u.Deleted = true
		}
	}
	for _, tc := range []struct {
		name       string
		seed       model.Snapshot
		constraint string
		text       string
	}{
		{"an organization without an admin", drop(func(a model.Assignment) bool { return a.Org == "org-meshery" }),
			"organizations_live_org_admin", "organization org-meshery would have no live Organization Admin"},
		{"an organization whose admins are deleted", deletedAdmins, "organizations_live_org_admin", "org-layer5"},
		{"no Provider Admin any more", drop(func(a model.Assignment) bool { return a.Role == model.RoleProviderAdmin }),
			"keygate_live_provider_admin", "Provider Admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Load(ctx, pool, testBuiltin(), tc.seed)
			wantViolation(t, err, tc.constraint, tc.text)
			after, err := Snapshot(ctx, pool)
			if err != nil {
				t.Fatal(err)
			}
			if normalized(t, mustResolve(t, testBuiltin(), before)) != normalized(t, mustResolve(t, testBuiltin(), after)) {
				t.Error("a refused Load changed the database")
			}
		})
	}
	t.Run("a big Load (checked without guard rows) is checked too", func(t *testing.T) {
		big := benchSeed(3000) // 30 organizations, 3000 users: over the 1000 checks that ask pg_locks
		var kept []model.Assignment
		for _, a := range big.Assignments {
			if a.Role != "r-org-admin" || a.Org != "o-000007" {
				kept = append(kept, a)
			}
		}
		big.Assignments = kept
		wantViolation(t, Load(ctx, pool, testBuiltin(), big), "organizations_live_org_admin",
			"organization o-000007 would have no live Organization Admin")
		if err := Load(ctx, pool, testBuiltin(), benchSeed(3000)); err != nil {
			t.Fatalf("Load of the valid big seed: %v", err)
		}
		var guards int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM keygate_guards WHERE kind = 'user' AND id LIKE 'u-0%'`).Scan(&guards); err != nil {
			t.Fatal(err)
		}
		if guards != 0 {
			t.Errorf("the big Load took %d guard rows, want none (it holds the tables exclusively)", guards)
		}
	})
	t.Run("a valid seed loads, twice", func(t *testing.T) {
		for range 2 {
			if err := Load(ctx, pool, testBuiltin(), testSeed()); err != nil {
				t.Fatalf("Load: %v", err)
			}
		}
	})
	t.Run("an empty seed loads: no users, nothing to administer", func(t *testing.T) {
		if err := Load(ctx, pool, testBuiltin(), model.Snapshot{}); err != nil {
			t.Fatalf("Load: %v", err)
		}
	})
	t.Run("nothing is left pending", func(t *testing.T) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM keygate_pending_checks) + (SELECT count(*) FROM keygate_commit_hooks)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows left in keygate_pending_checks and keygate_commit_hooks", n)
		}
	})
}
