package catalog_test

import (
	"testing"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/model"
)

// TestIdentityRoutesResolve: every route of the identity API table names a key of the built-in catalogue (by id,
// name or alias), a valid org source and resource, on its own, without the demo data.
func TestIdentityRoutesResolve(t *testing.T) {
	t.Parallel()
	routes, err := catalog.IdentityRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if len(routes.Routes) < 40 {
		t.Fatalf("only %d routes", len(routes.Routes))
	}
	m, err := catalog.Resolve(model.Snapshot{Routes: routes.Routes})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Routes {
		if _, ok := m.Key(r.Key); !ok {
			t.Errorf("%s %s: key %q is not in the catalogue", r.Method, r.Path, r.Key)
		}
	}
}

// TestBuiltinCatalogue: the default roles exist under their exact names and scopes, and the seeds' key names
// resolve (as aliases where the public catalogue spells them differently).
func TestBuiltinCatalogue(t *testing.T) {
	t.Parallel()
	m, err := catalog.Resolve(model.Snapshot{})
	if err != nil {
		t.Fatal(err)
	}
	scopes := map[string]string{
		model.RoleProviderAdmin: model.ScopeProvider, model.RoleOrganizationAdmin: model.ScopeOrganization,
		model.RoleBillingManager: model.ScopeOrganization, model.RoleUser: model.ScopeOrganization,
		model.RoleWorkspaceAdmin: model.ScopeWorkspace, model.RoleWorkspaceManager: model.ScopeWorkspace,
		model.RoleTeamAdmin: model.ScopeTeam, model.RoleTeamManager: model.ScopeTeam,
	}
	for name, scope := range scopes {
		r, ok := m.Role(m.SystemRoles[name])
		if !ok || r.Scope != scope || !r.System {
			t.Errorf("default role %q: %+v", name, r)
		}
	}
	for _, name := range []string{"Create Organization", "View All Teams", "Update Organization", "Delete Organization",
		"Approve Catalog Request", "Connect Github Account to Workspace", "Edit User", "Update Profile"} {
		if _, ok := m.KeyNames[name]; !ok {
			t.Errorf("seed key %q does not resolve", name)
		}
	}
	if id := m.KeyNames["Create Organization"]; id != "17a6fa82-cdab-46db-a7ce-a9d0a1bbf40f" {
		t.Errorf("Create Organization has id %s, not the public catalogue's", id)
	}
}

// TestDemoResolves: the demo dataset with the route table is valid.
func TestDemoResolves(t *testing.T) {
	t.Parallel()
	demo, err := catalog.DemoWithRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.Resolve(demo); err != nil {
		t.Fatal(err)
	}
}
