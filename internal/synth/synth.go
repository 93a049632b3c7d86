// Package synth generates synthetic keygate data of a given size for benchmarks: users spread over
// organizations, each user a member of 2 orgs with 2-3 roles in all, plus teams, workspaces, designs and tokens.
// The output is deterministic for a given size.
package synth

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/keygate/keygate/internal/model"
)

// Config sizes the data.
type Config struct {
	Users int
	// UsersPerOrg sets the number of organizations (Users / UsersPerOrg, at least 2). Default 1000.
	UsersPerOrg int
}

// UserID returns the id of the i-th user (UUID-shaped, like production ids).
func UserID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

// OrgID returns the id of the i-th organization.
func OrgID(i int) string { return fmt.Sprintf("00000000-0000-4000-9000-%012d", i) }

// Generate returns a snapshot of cfg.Users users.
func Generate(cfg Config) model.Snapshot {
	if cfg.UsersPerOrg <= 0 {
		cfg.UsersPerOrg = 1000
	}
	nOrgs := max(cfg.Users/cfg.UsersPerOrg, 2)
	s := model.Snapshot{
		Users:       make([]model.User, 0, cfg.Users),
		Assignments: make([]model.Assignment, 0, cfg.Users*5/2+nOrgs),
	}
	for i := range cfg.Users {
		s.Users = append(s.Users, model.User{ID: UserID(i), Plan: model.PlanTeam})
	}
	for o := range nOrgs {
		org := OrgID(o)
		owner := UserID(o % cfg.Users)
		team := fmt.Sprintf("00000000-0000-4000-a000-%012d", o)
		ws := fmt.Sprintf("00000000-0000-4000-b000-%012d", o)
		s.Organizations = append(s.Organizations, model.Organization{ID: org, Name: fmt.Sprintf("Org %d", o), Owner: owner})
		s.Teams = append(s.Teams, model.Team{ID: team, Org: org, Name: "Team", Owner: owner, Members: []string{owner}})
		s.Workspaces = append(s.Workspaces, model.Workspace{ID: ws, Org: org, Name: "Workspace", Owner: owner, Teams: []string{team}})
		s.Designs = append(s.Designs, model.Design{ID: fmt.Sprintf("00000000-0000-4000-c000-%012d", o), Workspace: ws, Owner: owner})
		s.Assignments = append(s.Assignments,
			model.Assignment{User: owner, Role: model.RoleTeamAdmin, Org: org, Team: team},
			model.Assignment{User: owner, Role: model.RoleWorkspaceAdmin, Org: org, Workspace: ws})
	}
	extra := []string{model.RoleOrganizationAdmin, model.RoleBillingManager, "", ""}
	for i := range cfg.Users {
		u := UserID(i)
		home, away := i%nOrgs, (i/nOrgs+i+1)%nOrgs
		if away == home {
			away = (home + 1) % nOrgs
		}
		s.Assignments = append(s.Assignments,
			model.Assignment{User: u, Role: model.RoleUser, Org: OrgID(home)},
			model.Assignment{User: u, Role: model.RoleUser, Org: OrgID(away)})
		// The org owners are Organization Admins; others get a second home role now and then.
		if i < nOrgs {
			s.Assignments = append(s.Assignments, model.Assignment{User: u, Role: model.RoleOrganizationAdmin, Org: OrgID(home)})
		} else if r := extra[i%len(extra)]; r != "" {
			s.Assignments = append(s.Assignments, model.Assignment{User: u, Role: r, Org: OrgID(home)})
		}
	}
	for i := 0; i < cfg.Users; i += 100 {
		s.Tokens = append(s.Tokens, model.Token{ID: fmt.Sprintf("tok-%d", i), User: UserID(i), Revoked: i%1000 == 0})
	}
	s.Assignments = append(s.Assignments, model.Assignment{User: UserID(0), Role: model.RoleProviderAdmin})
	return s
}

// BenchSizes returns the user counts the scale benchmarks run at: KEYGATE_BENCH_USERS (comma-separated, e.g.
// "100000,1000000"; `make bench` sets it), else def.
func BenchSizes(def string) []int {
	spec := os.Getenv("KEYGATE_BENCH_USERS")
	if spec == "" {
		spec = def
	}
	var out []int
	for _, f := range strings.Split(spec, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}
