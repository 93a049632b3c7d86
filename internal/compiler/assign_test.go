package compiler_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/seed"
)

// The data the assign rules read: settings from the seed, role_teams per org, edit_user per role set.
func TestAssignData(t *testing.T) {
	t.Parallel()
	snap, err := seed.Parse("assign.yaml", []byte(`
settings: {assign_key_subset: true}
keychains: [{id: kc-hr, name: HR, org: o1, keys: [Edit User]}, {id: kc-hr-own, name: HR own, org: o1, keys: [Edit User]}]
roles:
  - {id: r-hr, name: HR, scope: organization, org: o1, keychains: [kc-hr]}
  - {id: r-hr-own, name: HR own, scope: organization, org: o1, keychains: [kc-hr-own], owner_only: [Edit User]}
  - {id: r-lead, name: Lead, scope: team, org: o1, keychains: [kc-hr]}
users: [{id: u1}, {id: u2}, {id: u3}, {id: u4}]
organizations: [{id: o1, owner: u1}, {id: o2, owner: u1}]
teams: [{id: t2, org: o1, owner: u1}, {id: t1, org: o1, owner: u1}, {id: t3, org: o2, owner: u1}]
assignments:
  - {user: u1, role: Organization Admin, org: o1}
  - {user: u2, role: r-hr, org: o1}
  - {user: u3, role: r-hr-own, org: o1}
  - {user: u1, role: Team Admin, org: o1, team: t2}
  - {user: u1, role: r-lead, org: o1, team: t2}
  - {user: u1, role: Team Manager, org: o1, team: t1}
  - {user: u1, role: Team Admin, org: o2, team: t3}
`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := catalog.Resolve(snap)
	if err != nil {
		t.Fatal(err)
	}
	var db struct {
		Settings map[string]bool `json:"settings"`
		Orgs     map[string]struct {
			Members   map[string]string   `json:"members"`
			RoleTeams map[string][]string `json:"role_teams"`
		} `json:"orgs"`
		Teams map[string]struct {
			Roles map[string]string `json:"roles"`
		} `json:"teams"`
		Rolesets map[string]struct {
			EditUser bool `json:"edit_user"`
		} `json:"rolesets"`
	}
	if err := json.Unmarshal(compiler.Data(m), &db); err != nil {
		t.Fatal(err)
	}
	if !db.Settings["assign_key_subset"] {
		t.Errorf("settings = %v, want assign_key_subset true", db.Settings)
	}
	if got := db.Orgs["o1"].RoleTeams["u1"]; !slices.Equal(got, []string{"t1", "t2"}) {
		t.Errorf("o1 role_teams[u1] = %v, want [t1 t2] (sorted, once each)", got)
	}
	if got := db.Orgs["o2"].RoleTeams["u1"]; !slices.Equal(got, []string{"t3"}) {
		t.Errorf("o2 role_teams[u1] = %v, want [t3]", got)
	}
	if _, ok := db.Orgs["o1"].RoleTeams["u2"]; ok {
		t.Errorf("u2 holds no team role, but has role_teams in o1")
	}
	for _, tc := range []struct {
		name string
		rs   string
		want bool
	}{
		{"custom org role with Edit User", db.Orgs["o1"].Members["u2"], true},
		{"custom role with owner-only Edit User", db.Orgs["o1"].Members["u3"], false},
		{"Organization Admin (a default role) alone", db.Orgs["o1"].Members["u1"], false},
		{"custom team role with Edit User beside Team Admin", db.Teams["t2"].Roles["u1"], true},
		{"Team Manager", db.Teams["t1"].Roles["u1"], false},
	} {
		rs, ok := db.Rolesets[tc.rs]
		if !ok {
			t.Errorf("%s: no role set %q", tc.name, tc.rs)
			continue
		}
		if rs.EditUser != tc.want {
			t.Errorf("%s: edit_user = %v, want %v", tc.name, rs.EditUser, tc.want)
		}
	}
}
