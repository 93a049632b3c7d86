package model_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/model"
)

// builtin is a minimal catalogue: two keys, one keychain, a few default roles.
func builtin() model.Snapshot {
	return model.Snapshot{
		Keys: []model.Key{
			{ID: "k-edit-user", Name: "Edit User", Function: "update"},
			{ID: "k-update-profile", Name: "Update User Profile", Function: "update", Aliases: []string{"Update Profile"}},
			{ID: "k-view-teams", Name: "View All Teams", Function: "read"},
		},
		Keychains: []model.Keychain{{ID: "kc-admin", Name: "Admin keys", Keys: []string{"k-edit-user", "View All Teams"}}},
		Roles: []model.Role{
			{ID: "r-pa", Name: model.RoleProviderAdmin, Scope: model.ScopeProvider, Keychains: []string{"kc-admin"}},
			{ID: "r-oa", Name: model.RoleOrganizationAdmin, Scope: model.ScopeOrganization, Keychains: []string{"kc-admin"}},
			{ID: "r-user", Name: model.RoleUser, Scope: model.ScopeOrganization},
			{ID: "r-ta", Name: model.RoleTeamAdmin, Scope: model.ScopeTeam, Keychains: []string{"Admin keys"}},
			{ID: "r-wa", Name: model.RoleWorkspaceAdmin, Scope: model.ScopeWorkspace},
		},
	}
}

// valid is a small consistent data set; each bad case below breaks one thing of it.
func valid() model.Snapshot {
	return model.Snapshot{
		Users:         []model.User{{ID: "u1"}, {ID: "u2", Plan: "free"}},
		Organizations: []model.Organization{{ID: "o1", Owner: "u1"}, {ID: "o2", Owner: "u1"}},
		Teams:         []model.Team{{ID: "t1", Org: "o1", Owner: "u1", Members: []string{"u2", "u1", "u2"}}},
		Workspaces:    []model.Workspace{{ID: "w1", Org: "o1", Owner: "u1", Teams: []string{"t1"}}},
		Designs:       []model.Design{{ID: "d1", Workspace: "w1", Owner: "u2"}},
		Keychains:     []model.Keychain{{ID: "kc-custom", Name: "Custom", Org: "o1", Keys: []string{"Update Profile"}}},
		Roles:         []model.Role{{ID: "r-custom", Name: "Auditor", Scope: "organization", Org: "o1", Keychains: []string{"Custom"}, OwnerOnly: []string{"k-update-profile"}}},
		Assignments: []model.Assignment{
			{User: "u1", Role: "Organization Admin", Org: "o1"},
			{User: "u1", Role: "Provider Admin", Org: "ignored"},
			{User: "u2", Role: "Team Admin", Org: "o1", Team: "t1"},
			{User: "u2", Role: "Auditor", Org: "o1"},
		},
		Tokens: []model.Token{{ID: "tok", User: "u1", ExpiresAt: "2030-01-02T03:04:05+01:00"}},
		Routes: []model.Route{{Service: "id", Method: "get", Path: "/orgs/{org}/teams/{team}", Key: "View All Teams", OrgFrom: "{org}", Resource: "team:{team}"}},
	}
}

func TestResolveValid(t *testing.T) {
	t.Parallel()
	m, err := model.Resolve(builtin(), valid())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("references become ids", func(t *testing.T) {
		a := m.Assignments[0]
		if a.Role != "r-oa" {
			t.Errorf("role by name resolved to %q, want r-oa", a.Role)
		}
		kc, _ := m.Keychain("kc-admin")
		if strings.Join(kc.Keys, ",") != "k-edit-user,k-view-teams" {
			t.Errorf("keychain keys = %v", kc.Keys)
		}
		if m.Routes[0].Key != "k-view-teams" || m.Routes[0].Method != "GET" || m.Routes[0].OrgFrom != "org" || m.Routes[0].Resource != "team:team" {
			t.Errorf("route = %+v", m.Routes[0])
		}
	})
	t.Run("provider assignment drops its org", func(t *testing.T) {
		if a := m.Assignments[1]; a.Org != "" {
			t.Errorf("org = %q, want empty", a.Org)
		}
	})
	t.Run("defaults and normalisation", func(t *testing.T) {
		if m.Users[0].Plan != model.PlanTeam {
			t.Errorf("default plan = %q", m.Users[0].Plan)
		}
		if m.Designs[0].Visibility != model.VisibilityPrivate {
			t.Errorf("default visibility = %q", m.Designs[0].Visibility)
		}
		if got := strings.Join(m.Teams[0].Members, ","); got != "u1,u2" {
			t.Errorf("members = %q, want sorted without repeats", got)
		}
		if m.Tokens[0].ExpiresAt != "2030-01-02T02:04:05Z" {
			t.Errorf("expires_at = %q, want UTC", m.Tokens[0].ExpiresAt)
		}
	})
	t.Run("aliases resolve", func(t *testing.T) {
		if m.KeyNames["Update Profile"] != "k-update-profile" {
			t.Errorf("alias -> %q", m.KeyNames["Update Profile"])
		}
	})
	t.Run("owner-only keys", func(t *testing.T) {
		keys := m.RoleKeys("r-custom")
		if ownerOnly, ok := keys["k-update-profile"]; !ok || !ownerOnly {
			t.Errorf("RoleKeys = %v", keys)
		}
	})
}

func TestResolveMergesCatalogueEntries(t *testing.T) {
	t.Parallel()
	data := model.Snapshot{
		Keys:      []model.Key{{ID: "k-edit-user", Name: "Edit User", Category: "IAM"}, {ID: "k-new", Name: "New Key"}},
		Keychains: []model.Keychain{{ID: "kc-extra", Name: "Extra", Keys: []string{"k-new"}}},
		Roles:     []model.Role{{Name: "User", Keychains: []string{"kc-extra"}, OwnerOnly: []string{"New Key"}}},
	}
	m, err := model.Resolve(builtin(), data)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := m.Key("k-edit-user"); k.Category != "IAM" || !k.System {
		t.Errorf("merged key = %+v", k)
	}
	if keys := m.RoleKeys("r-user"); !keys["k-new"] {
		t.Errorf("User role keys = %v, want k-new owner-only", keys)
	}
	if b := builtin(); len(b.Roles[2].Keychains) != 0 {
		t.Errorf("resolve changed the catalogue it was given")
	}
}

func TestResolveRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		break_ func(s *model.Snapshot)
		want   []string // substrings of one problem each
	}{
		{"dangling assignment user", func(s *model.Snapshot) { s.Assignments[0].User = "ghost" }, []string{`assignments[0]: user: unknown user "ghost"`}},
		{"dangling role", func(s *model.Snapshot) { s.Assignments[0].Role = "Nope" }, []string{`assignments[0]: role: unknown role "Nope"`}},
		{"duplicate user id", func(s *model.Snapshot) { s.Users = append(s.Users, model.User{ID: "u1"}) }, []string{`users[2] (id "u1"): id: duplicate id "u1"`}},
		{"unknown scope", func(s *model.Snapshot) { s.Roles[0].Scope = "galaxy" }, []string{`roles[0] (id "r-custom"): scope: unknown scope "galaxy"`}},
		{"team role without team", func(s *model.Snapshot) { s.Assignments[2].Team = "" }, []string{`assignments[2]: team: role "Team Admin" has team scope: a team is required`}},
		{"team of another org", func(s *model.Snapshot) { s.Assignments[2].Org = "o2" }, []string{`team "t1" belongs to organization "o1", not "o2"`}},
		{"org role with a team", func(s *model.Snapshot) { s.Assignments[0].Team = "t1" }, []string{`assignments[0]: team: role "Organization Admin" has organization scope`}},
		{"custom role of another org", func(s *model.Snapshot) { s.Assignments[3].Org = "o2" }, []string{`unknown role "Auditor"`}},
		{"unknown plan", func(s *model.Snapshot) { s.Users[0].Plan = "gold" }, []string{`users[0] (id "u1"): plan: unknown plan "gold"`}},
		{"free user in two orgs", func(s *model.Snapshot) {
			s.Assignments = append(s.Assignments, model.Assignment{User: "u2", Role: "User", Org: "o2"})
		}, []string{`users[1] (id "u2"): plan: a Free-plan user belongs to a single organization, but holds roles in o1, o2`}},
		{"unknown key in keychain", func(s *model.Snapshot) { s.Keychains[0].Keys = []string{"Fly"}; s.Roles[0].OwnerOnly = nil }, []string{`keychains[0] (id "kc-custom"): keys[0]: unknown key "Fly"`}},
		{"owner-only key outside the role", func(s *model.Snapshot) { s.Roles[0].OwnerOnly = []string{"Edit User"} }, []string{`owner_only[0]: key "Edit User" is not in any of the role's keychains`}},
		{"renaming a system key", func(s *model.Snapshot) { s.Keys = []model.Key{{ID: "k-edit-user", Name: "Hack"}} }, []string{`keys[0] (id "k-edit-user"): name: key "k-edit-user" is a built-in system key named "Edit User"`}},
		{"ambiguous key name", func(s *model.Snapshot) {
			s.Keys = []model.Key{{ID: "k-a", Name: "Twin"}, {ID: "k-b", Name: "Twin"}}
			s.Keychains[0].Keys = []string{"Twin"}
			s.Roles[0].OwnerOnly = nil
		}, []string{`ambiguous key name "Twin" (ids k-a, k-b)`}},
		{"bad token expiry", func(s *model.Snapshot) { s.Tokens[0].ExpiresAt = "tomorrow" }, []string{`tokens[0] (id "tok"): expires_at: not an RFC 3339 time`}},
		{"design in unknown workspace", func(s *model.Snapshot) { s.Designs[0].Workspace = "w9" }, []string{`designs[0] (id "d1"): workspace: unknown workspace "w9"`}},
		{"workspace of unknown team", func(s *model.Snapshot) { s.Workspaces[0].Teams = []string{"t9"} }, []string{`workspaces[0] (id "w1"): teams[0]: unknown team "t9"`}},
		{"route org from missing param", func(s *model.Snapshot) { s.Routes[0].OrgFrom = "tenant" }, []string{`routes[0]: org_from: want "header" or a parameter of the path, got "tenant"`}},
		{"route with dot-dot", func(s *model.Snapshot) { s.Routes[0].Path = "/a/../{org}/{team}" }, []string{`routes[0]: path: segment 1 is empty, . or ..`}},
		{"duplicate route", func(s *model.Snapshot) { s.Routes = append(s.Routes, s.Routes[0]) }, []string{`routes[1]: duplicate of routes[0]`}},
		{"every problem listed", func(s *model.Snapshot) {
			s.Teams[0].Owner = "ghost"
			s.Organizations[1].Owner = ""
		}, []string{`organizations[1] (id "o2"): owner: missing`, `teams[0] (id "t1"): owner: unknown user "ghost"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := valid()
			tc.break_(&s)
			_, err := model.Resolve(builtin(), s)
			var ve *model.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a ValidationError", err)
			}
			for _, w := range tc.want {
				found := false
				for _, p := range ve.Problems {
					if strings.Contains(p.String(), w) {
						found = true
					}
				}
				if !found {
					t.Errorf("no problem mentions %q; got:\n%v", w, err)
				}
			}
			if len(ve.Problems) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(ve.Problems), len(tc.want), err)
			}
		})
	}
}
