package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/model"
)

// benchUsersEnv sets the number of users of BenchmarkSnapshot (default 100000).
const benchUsersEnv = "KEYGATE_BENCH_USERS"

// benchSeed generates a seed of n users: one organization per 100 users (at least 2), each with its owner as
// Organization Admin, two teams, a workspace and a custom role; user 1 is the Provider Admin; every user holds the User role in two organizations and every other user a team
// role too (2-3 roles each), is a member of a team, and every tenth owns a design and a token.
func benchSeed(n int) model.Snapshot {
	nOrgs := max(2, n/100)
	s := model.Snapshot{
		Users:         make([]model.User, 0, n),
		Organizations: make([]model.Organization, 0, nOrgs),
		Assignments:   make([]model.Assignment, 0, n*5/2),
	}
	user := func(i int) string { return fmt.Sprintf("u-%08d", i) }
	org := func(i int) string { return fmt.Sprintf("o-%06d", i%nOrgs) }
	team := func(o, j int) string { return fmt.Sprintf("t-%06d-%d", o%nOrgs, j) }
	for o := range nOrgs {
		owner := user(o % n)
		s.Organizations = append(s.Organizations, model.Organization{ID: org(o), Name: "Org " + org(o), Owner: owner})
		s.Assignments = append(s.Assignments, model.Assignment{User: owner, Role: "r-org-admin", Org: org(o)})
		s.Keychains = append(s.Keychains, model.Keychain{ID: "kc-" + org(o), Name: "Custom", Org: org(o), Keys: []string{"Edit User"}})
		s.Roles = append(s.Roles, model.Role{ID: "r-" + org(o), Name: "Auditor", Scope: model.ScopeOrganization, Org: org(o), Keychains: []string{"Custom"}})
		s.Workspaces = append(s.Workspaces, model.Workspace{ID: "w-" + org(o), Org: org(o), Name: "WS", Owner: owner,
			Teams: []string{team(o, 0), team(o, 1)}})
		for j := range 2 {
			s.Teams = append(s.Teams, model.Team{ID: team(o, j), Org: org(o), Name: "Team", Owner: owner})
		}
	}
	plans := []string{model.PlanTeam, model.PlanEnterprise}
	for i := range n {
		u := user(i)
		s.Users = append(s.Users, model.User{ID: u, Email: u + "@example.com", Plan: plans[i%2], Deleted: i%97 == 0 && i >= nOrgs})
		a, b := i%nOrgs, (i+1)%nOrgs
		s.Assignments = append(s.Assignments,
			model.Assignment{User: u, Role: "r-user", Org: org(a)},
			model.Assignment{User: u, Role: "r-user", Org: org(b)})
		t := &s.Teams[2*a+i%2]
		t.Members = append(t.Members, u)
		if i%2 == 0 {
			s.Assignments = append(s.Assignments, model.Assignment{User: u, Role: "r-team-admin", Org: org(a), Team: t.ID})
		}
		if i%10 == 0 {
			s.Designs = append(s.Designs, model.Design{ID: "d-" + u, Workspace: "w-" + org(a), Owner: u, Visibility: model.VisibilityPublic})
			s.Tokens = append(s.Tokens, model.Token{ID: "tok-" + u, User: u, ExpiresAt: "2030-01-01T00:00:00Z"})
		}
	}
	s.Assignments = append(s.Assignments, model.Assignment{User: user(1 % n), Role: model.RoleProviderAdmin})
	return s
}

// benchUsers is KEYGATE_BENCH_USERS, default 100000.
func benchUsers(b *testing.B) int {
	n := 100000
	if v := os.Getenv(benchUsersEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", benchUsersEnv, v)
		}
	}
	return n
}

// BenchmarkSnapshot measures Snapshot over a database of KEYGATE_BENCH_USERS users:
//
//	KEYGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	KEYGATE_BENCH_USERS=1000000 go test ./internal/store -run '^$' -bench Snapshot -benchtime 1x
func BenchmarkSnapshot(b *testing.B) {
	n := benchUsers(b)
	ctx := context.Background()
	pool, _ := migratedPool(b)
	builtin, seed := testBuiltin(), benchSeed(n)
	start := time.Now()
	if err := Load(ctx, pool, builtin, seed); err != nil {
		b.Fatalf("Load: %v", err)
	}
	b.Logf("loaded %d users, %d organizations, %d assignments in %s", len(seed.Users), len(seed.Organizations),
		len(seed.Assignments), time.Since(start).Round(time.Millisecond))
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		b.Fatalf("VACUUM ANALYZE: %v", err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var snap model.Snapshot
	for b.Loop() {
		var err error
		if snap, err = Snapshot(ctx, pool); err != nil {
			b.Fatalf("Snapshot: %v", err)
		}
	}
	b.StopTimer()
	if len(snap.Users) != n || len(snap.Assignments) != len(seed.Assignments) {
		b.Fatalf("snapshot has %d users, %d assignments; want %d, %d", len(snap.Users), len(snap.Assignments), n, len(seed.Assignments))
	}
	b.ReportMetric(float64(n), "users")
}
