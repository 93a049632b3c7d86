package store

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/keygate/keygate/internal/model"
)

// testCatalogue is what importer.Import produces: system keys (one the built-in catalogue already has), a
// keychain of a role's grants, an extension of a default role with an owner-only key, and a role of its own.
func testCatalogue() model.Snapshot {
	return model.Snapshot{
		Keys: []model.Key{
			{ID: "k-view-teams", Name: "View All Teams", Category: "Teams", Function: "read", System: true},
			{ID: "k-subscriptions", Name: "Manage Subscriptions", Category: "Account", Function: "update", System: true},
			{ID: "k-catalog", Name: "Approve Catalog Request", Category: "Catalog", Function: "approve", System: true},
		},
		Keychains: []model.Keychain{
			{ID: "kc-l5-user", Name: "Layer5 User grants", Keys: []string{"k-subscriptions", "k-view-teams"}, System: true},
			{ID: "kc-l5-anon", Name: "Layer5 Anonymous grants", Keys: []string{"k-catalog"}, System: true},
		},
		Roles: []model.Role{
			{Name: model.RoleUser, Keychains: []string{"kc-l5-user"}, OwnerOnly: []string{"k-subscriptions"}},
			{ID: "r-anonymous", Name: "Anonymous", Scope: model.ScopeOrganization, Keychains: []string{"kc-l5-anon"}},
		},
	}
}

func TestImportCatalogue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := migratedPool(t)
	builtin, seed := testBuiltin(), testSeed()
	if err := Load(ctx, pool, builtin, seed); err != nil {
		t.Fatal(err)
	}
	before, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := ImportCatalogue(ctx, pool, builtin, testCatalogue()); err != nil {
		t.Fatal(err)
	}
	after, err := Snapshot(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	m := mustResolve(t, builtin, after)

	t.Run("the catalogue is in", func(t *testing.T) {
		keys := m.RoleKeys("r-user")
		if ownerOnly, ok := keys["k-subscriptions"]; !ok || !ownerOnly {
			t.Errorf("User role keys %v: want the imported owner-only Manage Subscriptions", keys)
		}
		if _, ok := m.Role("r-anonymous"); !ok {
			t.Error("the catalogue's own role is missing")
		}
		if k, _ := m.Key("k-catalog"); !k.System {
			t.Errorf("imported key %+v is not a system key", k)
		}
	})
	t.Run("the rest of the model is untouched", func(t *testing.T) {
		if len(after.Users) != len(before.Users) || len(after.Assignments) != len(before.Assignments) ||
			len(after.Organizations) != len(before.Organizations) || len(after.Tokens) != len(before.Tokens) {
			t.Errorf("import changed the data: users %d->%d, assignments %d->%d", len(before.Users), len(after.Users),
				len(before.Assignments), len(after.Assignments))
		}
		// The seed's own extensions of default roles survive beside the catalogue's.
		extended := 0
		for _, r := range before.Roles {
			if r.ID != "" {
				continue
			}
			role := mustRole(t, m, m.SystemRoles[r.Name])
			for _, kc := range r.Keychains {
				extended++
				if !slices.Contains(role.Keychains, kc) {
					t.Errorf("the seed's keychain %s of %s was dropped", kc, r.Name)
				}
			}
		}
		if extended == 0 {
			t.Fatal("the seed extends no default role: the check above checks nothing")
		}
	})
	t.Run("importing again changes nothing", func(t *testing.T) {
		if err := ImportCatalogue(ctx, pool, builtin, testCatalogue()); err != nil {
			t.Fatal(err)
		}
		again, err := Snapshot(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := normalized(t, mustResolve(t, builtin, again)), normalized(t, m); got != want {
			t.Errorf("a second import changed the model:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("a catalogue renaming a system key is refused and nothing changes", func(t *testing.T) {
		bad := testCatalogue()
		bad.Keys = append(bad.Keys, model.Key{ID: "k-edit-user", Name: "Renamed", System: true})
		var ve *model.ValidationError
		if err := ImportCatalogue(ctx, pool, builtin, bad); !errors.As(err, &ve) {
			t.Fatalf("err = %v, want a validation error", err)
		}
		now, err := Snapshot(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := normalized(t, mustResolve(t, builtin, now)), normalized(t, m); got != want {
			t.Error("a refused import changed the database")
		}
	})
}

func mustRole(t *testing.T, m *model.Model, id string) model.Role {
	t.Helper()
	r, ok := m.Role(id)
	if !ok {
		t.Fatalf("no role %s", id)
	}
	return r
}
