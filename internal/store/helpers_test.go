package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/pgtest"
)

// testPool returns a pool whose connections work in a schema of their own, dropped when the test ends, and
// the connection string of the database.
func testPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return pgtest.Pool(t, "keygate_test")
}

// migratedPool is testPool with the schema migrated.
func migratedPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	pool, dsn := testPool(t)
	if err := Migrate(context.Background(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return pool, dsn
}

// testBuiltin is a small built-in catalogue in the shape of the real one.
func testBuiltin() model.Snapshot {
	return model.Snapshot{
		Keys: []model.Key{
			{ID: "k-create-org", Name: "Create Organization", Category: "Organization", Function: "create"},
			{ID: "k-update-org", Name: "Update Organization", Aliases: []string{"Edit Organization"}},
			{ID: "k-delete-org", Name: "Delete Organization", Category: "Organization", Function: "delete"},
			{ID: "k-view-teams", Name: "View All Teams", Category: "Team", Function: "read"},
			{ID: "k-edit-user", Name: "Edit User", Category: "User", Function: "update"},
			{ID: "k-update-profile", Name: "Update Profile", Category: "User", Function: "update"},
		},
		Keychains: []model.Keychain{
			{ID: "kc-org", Name: "Organization Management", Keys: []string{"Create Organization", "Update Organization", "Delete Organization"}},
			{ID: "kc-users", Name: "User Management", Keys: []string{"Edit User", "k-update-profile"}},
			{ID: "kc-teams", Name: "Team Management", Keys: []string{"View All Teams"}},
		},
		Roles: []model.Role{
			{ID: "r-provider-admin", Name: model.RoleProviderAdmin, Scope: model.ScopeProvider, Keychains: []string{"kc-org", "kc-users", "kc-teams"}},
			{ID: "r-org-admin", Name: model.RoleOrganizationAdmin, Scope: model.ScopeOrganization, Keychains: []string{"kc-org", "kc-users", "Team Management"}, OwnerOnly: []string{"Delete Organization"}},
			{ID: "r-billing", Name: model.RoleBillingManager, Scope: model.ScopeOrganization},
			{ID: "r-user", Name: model.RoleUser, Scope: model.ScopeOrganization, Keychains: []string{"kc-users"}, OwnerOnly: []string{"Update Profile"}},
			{ID: "r-ws-admin", Name: model.RoleWorkspaceAdmin, Scope: model.ScopeWorkspace, Keychains: []string{"kc-teams"}},
			{ID: "r-ws-manager", Name: model.RoleWorkspaceManager, Scope: model.ScopeWorkspace},
			{ID: "r-team-admin", Name: model.RoleTeamAdmin, Scope: model.ScopeTeam, Keychains: []string{"kc-teams"}},
			{ID: "r-team-manager", Name: model.RoleTeamManager, Scope: model.ScopeTeam},
		},
		Routes: []model.Route{
			{Service: "identity", Method: "GET", Path: "/api/identity/orgs/{org}", Key: "Update Organization", OrgFrom: "org", Resource: "organization:org"},
		},
	}
}

// testSeed exercises every entity and the ways a seed refers to things (ids, names, aliases, extensions of
// default roles, defaults left out).
func testSeed() model.Snapshot {
	return model.Snapshot{
		Keys: []model.Key{
			{ID: "k-update-org", Name: "Edit Organization", Category: "Organization", Function: "update", Aliases: []string{"Modify Organization"}},
			{ID: "k-approve", Name: "Approve Catalog Request", Category: "Catalog", Function: "approve"},
			{ID: "k-github", Name: "Connect Github Account to Workspace", Aliases: []string{"Connect GitHub"}},
		},
		Keychains: []model.Keychain{
			{ID: "kc-catalog", Name: "Catalog", Keys: []string{"Approve Catalog Request"}},
			{ID: "kc-acme", Name: "Acme Custom", Org: "o-acme", Keys: []string{"Edit User", "k-github", "Connect GitHub"}},
		},
		Roles: []model.Role{
			{Name: model.RoleOrganizationAdmin, Keychains: []string{"Catalog"}, OwnerOnly: []string{"Approve Catalog Request"}},
			{Name: model.RoleUser, Scope: model.ScopeOrganization, Keychains: []string{"kc-users"}},
			{ID: "r-auditor", Name: "Auditor", Scope: model.ScopeOrganization, Org: "o-acme", Keychains: []string{"Acme Custom", "Team Management"}, OwnerOnly: []string{"Edit User"}},
			{ID: "r-reviewer", Name: "Reviewer", Scope: model.ScopeTeam, Keychains: []string{"Catalog"}},
		},
		Users: []model.User{
			{ID: "u-alice", Email: "alice@example.com", Plan: model.PlanEnterprise},
			{ID: "u-bob", Email: "bob@example.com", Plan: model.PlanFree},
			{ID: "u-carol", Email: "carol@example.com", Plan: model.PlanTeam},
			{ID: "u-dave", Email: "dave@example.com", Deleted: true},
			{ID: "u-erin"},
		},
		Organizations: []model.Organization{
			{ID: "o-globex", Name: "Globex", Owner: "u-carol"},
			{ID: "o-acme", Name: "Acme", Owner: "u-alice"},
		},
		Teams: []model.Team{
			{ID: "t-acme-dev", Org: "o-acme", Name: "Dev", Owner: "u-alice", Members: []string{"u-bob", "u-alice", "u-bob"}},
			{ID: "t-globex-ops", Org: "o-globex", Name: "Ops", Owner: "u-carol", Members: []string{"u-carol"}},
			{ID: "t-empty", Org: "o-acme", Owner: "u-alice"},
		},
		Workspaces: []model.Workspace{
			{ID: "w-acme", Org: "o-acme", Name: "Acme WS", Owner: "u-alice", Teams: []string{"t-globex-ops", "t-acme-dev"}, Members: []string{"u-carol", "u-dave"}},
			{ID: "w-globex", Org: "o-globex", Owner: "u-carol"},
		},
		Designs: []model.Design{
			{ID: "d-2", Workspace: "w-acme", Owner: "u-bob"},
			{ID: "d-1", Workspace: "w-acme", Owner: "u-alice", Visibility: model.VisibilityPublished},
		},
		Assignments: []model.Assignment{
			{User: "u-alice", Role: model.RoleProviderAdmin, Org: "o-acme"},
			{User: "u-alice", Role: model.RoleOrganizationAdmin, Org: "o-acme"},
			{User: "u-carol", Role: "r-org-admin", Org: "o-globex"},
			{User: "u-bob", Role: model.RoleUser, Org: "o-acme"},
			{User: "u-bob", Role: model.RoleTeamAdmin, Org: "o-acme", Team: "t-acme-dev"},
			{User: "u-carol", Role: model.RoleWorkspaceManager, Org: "o-acme", Workspace: "w-acme"},
			{User: "u-carol", Role: "Auditor", Org: "o-acme"},
			{User: "u-erin", Role: "Reviewer", Org: "o-globex", Team: "t-globex-ops"},
		},
		Tokens: []model.Token{
			{ID: "tok-2", User: "u-bob", Revoked: true},
			{ID: "tok-1", User: "u-alice", ExpiresAt: "2030-01-02T03:04:05.25+02:00"},
		},
		Routes: []model.Route{
			{Service: "catalog", Method: "post", Path: "/api/catalog/requests/{id}/approve", Key: "Approve Catalog Request"},
			{Service: "identity", Method: "GET", Path: "/api/identity/orgs/{org}/teams/{team}", Key: "View All Teams", OrgFrom: "{org}", Resource: "team:{team}"},
		},
	}
}

// normalized renders a model's entries (not their order, which follows the source) as JSON, one line per list,
// so two models can be compared and a difference read.
func normalized(t testing.TB, m *model.Model) string {
	t.Helper()
	byID := func(list any) any { return list }
	keys := slices.Clone(m.Keys)
	slices.SortFunc(keys, func(a, b model.Key) int { return cmp.Compare(a.ID, b.ID) })
	kcs := slices.Clone(m.Keychains)
	slices.SortFunc(kcs, func(a, b model.Keychain) int { return cmp.Compare(a.ID, b.ID) })
	roles := slices.Clone(m.Roles)
	slices.SortFunc(roles, func(a, b model.Role) int { return cmp.Compare(a.ID, b.ID) })
	users := slices.Clone(m.Users)
	slices.SortFunc(users, func(a, b model.User) int { return cmp.Compare(a.ID, b.ID) })
	orgs := slices.Clone(m.Organizations)
	slices.SortFunc(orgs, func(a, b model.Organization) int { return cmp.Compare(a.ID, b.ID) })
	teams := slices.Clone(m.Teams)
	slices.SortFunc(teams, func(a, b model.Team) int { return cmp.Compare(a.ID, b.ID) })
	wss := slices.Clone(m.Workspaces)
	slices.SortFunc(wss, func(a, b model.Workspace) int { return cmp.Compare(a.ID, b.ID) })
	designs := slices.Clone(m.Designs)
	slices.SortFunc(designs, func(a, b model.Design) int { return cmp.Compare(a.ID, b.ID) })
	tokens := slices.Clone(m.Tokens)
	slices.SortFunc(tokens, func(a, b model.Token) int { return cmp.Compare(a.ID, b.ID) })
	as := slices.Clone(m.Assignments)
	slices.SortFunc(as, func(a, b model.Assignment) int {
		return cmp.Compare(a.User+"\x00"+a.Role+"\x00"+a.Org+"\x00"+a.Team+"\x00"+a.Workspace,
			b.User+"\x00"+b.Role+"\x00"+b.Org+"\x00"+b.Team+"\x00"+b.Workspace)
	})
	routes := slices.Clone(m.Routes)
	slices.SortFunc(routes, func(a, b model.Route) int {
		return cmp.Compare(a.Service+" "+a.Method+" "+a.Path, b.Service+" "+b.Method+" "+b.Path)
	})
	var b strings.Builder
	for _, part := range []struct {
		name string
		v    any
	}{
		{"keys", keys}, {"keychains", kcs}, {"roles", roles}, {"users", users}, {"organizations", orgs},
		{"teams", teams}, {"workspaces", wss}, {"designs", designs}, {"assignments", as}, {"tokens", tokens},
		{"routes", routes}, {"key_names", m.KeyNames}, {"system_roles", m.SystemRoles},
	} {
		out, err := json.Marshal(byID(part.v))
		if err != nil {
			t.Fatalf("encoding %s: %v", part.name, err)
		}
		fmt.Fprintf(&b, "%s: %s\n", part.name, out)
	}
	return b.String()
}

func mustResolve(t testing.TB, builtin, data model.Snapshot) *model.Model {
	t.Helper()
	m, err := model.Resolve(builtin, data)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return m
}
