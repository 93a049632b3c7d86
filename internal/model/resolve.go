package model

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Problem is one thing wrong with a snapshot: which entry, which field, what.
type Problem struct {
	Entry string // e.g. `roles[3] (id "r1")`
	Field string // e.g. `keychains[0]`
	Msg   string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Entry + ": " + p.Msg
	}
	return p.Entry + ": " + p.Field + ": " + p.Msg
}

// ValidationError lists every problem found in a snapshot.
type ValidationError struct{ Problems []Problem }

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid snapshot: %d problem(s)", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Model is a validated snapshot: built-in catalogue and data merged, every reference an id (lists of ids
// sorted and without repeats), defaults filled in. Entries keep their source order.
type Model struct {
	Keys          []Key
	Keychains     []Keychain
	Roles         []Role
	Users         []User
	Organizations []Organization
	Teams         []Team
	Workspaces    []Workspace
	Designs       []Design
	Assignments   []Assignment
	Tokens        []Token
	Routes        []Route
	Settings      Settings

	// KeyNames maps every key name, alias and id to the key's id.
	KeyNames map[string]string
	// SystemRoles maps the default role names to their ids.
	SystemRoles map[string]string

	keyIdx       map[string]int
	keychainIdx  map[string]int
	roleIdx      map[string]int
	orgIdx       map[string]int
	teamIdx      map[string]int
	workspaceIdx map[string]int
	userIdx      map[string]int
}

// Key returns the key with this id.
func (m *Model) Key(id string) (Key, bool) { i, ok := m.keyIdx[id]; return at(m.Keys, i, ok) }

// Keychain returns the keychain with this id.
func (m *Model) Keychain(id string) (Keychain, bool) {
	i, ok := m.keychainIdx[id]
	return at(m.Keychains, i, ok)
}

// Role returns the role with this id.
func (m *Model) Role(id string) (Role, bool) { i, ok := m.roleIdx[id]; return at(m.Roles, i, ok) }

// Organization returns the organization with this id.
func (m *Model) Organization(id string) (Organization, bool) {
	i, ok := m.orgIdx[id]
	return at(m.Organizations, i, ok)
}

// Team returns the team with this id.
func (m *Model) Team(id string) (Team, bool) { i, ok := m.teamIdx[id]; return at(m.Teams, i, ok) }

// Workspace returns the workspace with this id.
func (m *Model) Workspace(id string) (Workspace, bool) {
	i, ok := m.workspaceIdx[id]
	return at(m.Workspaces, i, ok)
}

func at[T any](s []T, i int, ok bool) (T, bool) {
	if !ok {
		var zero T
		return zero, false
	}
	return s[i], true
}

// RoleKeys returns the effective keys of a role: key id -> owner-only.
func (m *Model) RoleKeys(roleID string) map[string]bool {
	r, ok := m.Role(roleID)
	if !ok {
		return nil
	}
	ownerOnly := make(map[string]bool, len(r.OwnerOnly))
	for _, k := range r.OwnerOnly {
		ownerOnly[k] = true
	}
	keys := map[string]bool{}
	for _, kc := range r.Keychains {
		c, _ := m.Keychain(kc)
		for _, k := range c.Keys {
			keys[k] = ownerOnly[k]
		}
	}
	return keys
}

var (
	methodRe = regexp.MustCompile(`^[A-Z]+$`)
	paramRe  = regexp.MustCompile(`^\{([A-Za-z_][A-Za-z0-9_]*)\}$`)
	scopes   = map[string]bool{ScopeProvider: true, ScopeOrganization: true, ScopeTeam: true, ScopeWorkspace: true}
	plans    = map[string]bool{PlanFree: true, PlanTeam: true, PlanEnterprise: true}
	visibs   = map[string]bool{VisibilityPrivate: true, VisibilityPublic: true, VisibilityPublished: true}
	resTypes = map[string]bool{ResourceOrganization: true, ResourceTeam: true, ResourceWorkspace: true, ResourceDesign: true, ResourceUser: true}
)

// resolver carries the state of one Resolve call.
type resolver struct {
	problems []Problem
	m        *Model
	keyNames map[string][]string // name or alias -> key ids
}

func (r *resolver) add(entry, field, format string, args ...any) {
	r.problems = append(r.problems, Problem{Entry: entry, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func entry(list string, i int, id string) string {
	if id == "" {
		return list + "[" + strconv.Itoa(i) + "]"
	}
	return list + "[" + strconv.Itoa(i) + "] (id " + strconv.Quote(id) + ")"
}

// Resolve validates data against the built-in catalogue and returns the merged model. Every problem is
// reported (as a *ValidationError), each naming the entry of data and the field. The catalogue itself is
// trusted: a problem in it is reported the same way under "catalogue".
//
// Merging: a data key whose id is a built-in key's is the same key (its name must match the built-in name or
// one of its aliases; category, function and aliases are added); a data role without id named like a default
// role adds its keychains and owner-only keys to that default role (how the public grants matrix is imported).
func Resolve(builtin, data Snapshot) (*Model, error) {
	r := &resolver{m: &Model{}, keyNames: map[string][]string{}}
	r.keys(builtin.Keys, data.Keys)
	r.keychains(builtin.Keychains, data.Keychains)
	r.roles(builtin.Roles, data.Roles)
	r.users(data.Users)
	r.orgs(data.Organizations)
	r.teams(data.Teams)
	r.workspaces(data.Workspaces)
	r.designs(data.Designs)
	r.assignments(data.Assignments)
	r.tokens(data.Tokens)
	r.routes(append(append([]Route(nil), builtin.Routes...), data.Routes...), len(builtin.Routes))
	r.m.Settings = data.Settings
	if len(r.problems) > 0 {
		return nil, &ValidationError{Problems: r.problems}
	}
	return r.m, nil
}

func (r *resolver) keys(builtin, data []Key) {
	m := r.m
	m.keyIdx = map[string]int{}
	addKey := func(k Key) { m.keyIdx[k.ID] = len(m.Keys); m.Keys = append(m.Keys, k) }
	for i, k := range builtin {
		if _, dup := m.keyIdx[k.ID]; dup || k.ID == "" || k.Name == "" {
			r.add(entry("catalogue keys", i, k.ID), "id", "missing or duplicate")
			continue
		}
		k.System = true
		addKey(k)
	}
	nBuiltin := len(m.Keys)
	for i, k := range data {
		e := entry("keys", i, k.ID)
		if k.ID == "" {
			r.add(e, "id", "missing")
			continue
		}
		if k.Name == "" {
			r.add(e, "name", "missing")
			continue
		}
		if j, dup := m.keyIdx[k.ID]; dup {
			if j >= nBuiltin {
				r.add(e, "id", "duplicate id %q", k.ID)
				continue
			}
			b := &m.Keys[j]
			if b.Name != k.Name && !contains(b.Aliases, k.Name) {
				r.add(e, "name", "key %q is a built-in system key named %q and cannot be renamed", k.ID, b.Name)
				continue
			}
			if b.Category == "" {
				b.Category = k.Category
			}
			if b.Function == "" {
				b.Function = k.Function
			}
			for _, a := range k.Aliases {
				if !contains(b.Aliases, a) && a != b.Name {
					b.Aliases = append(slices.Clip(b.Aliases), a)
				}
			}
			continue
		}
		addKey(k)
	}
	for _, k := range m.Keys {
		r.keyNames[k.Name] = appendUnique(r.keyNames[k.Name], k.ID)
		for _, a := range k.Aliases {
			r.keyNames[a] = appendUnique(r.keyNames[a], k.ID)
		}
	}
	m.KeyNames = map[string]string{}
	for name, ids := range r.keyNames {
		if len(ids) == 1 {
			m.KeyNames[name] = ids[0]
		}
	}
	for _, k := range m.Keys {
		m.KeyNames[k.ID] = k.ID
	}
}

// keyRef resolves a key reference (id, name or alias).
func (r *resolver) keyRef(e, field, ref string) (string, bool) {
	if _, ok := r.m.keyIdx[ref]; ok {
		return ref, true
	}
	switch ids := r.keyNames[ref]; len(ids) {
	case 0:
		r.add(e, field, "unknown key %q", ref)
		return "", false
	case 1:
		return ids[0], true
	default:
		sort.Strings(ids)
		r.add(e, field, "ambiguous key name %q (ids %s)", ref, strings.Join(ids, ", "))
		return "", false
	}
}

func (r *resolver) keychains(builtin, data []Keychain) {
	m := r.m
	m.keychainIdx = map[string]int{}
	all := append(append([]Keychain(nil), builtin...), data...)
	for i, kc := range all {
		e := entry("keychains", i-len(builtin), kc.ID)
		if i < len(builtin) {
			e = entry("catalogue keychains", i, kc.ID)
			kc.System = true
		}
		switch {
		case kc.ID == "":
			r.add(e, "id", "missing")
			continue
		case kc.Name == "":
			r.add(e, "name", "missing")
		}
		if _, dup := m.keychainIdx[kc.ID]; dup {
			r.add(e, "id", "duplicate id %q", kc.ID)
			continue
		}
		keys := make([]string, 0, len(kc.Keys))
		for j, ref := range kc.Keys {
			if id, ok := r.keyRef(e, fmt.Sprintf("keys[%d]", j), ref); ok {
				keys = appendUnique(keys, id)
			}
		}
		sort.Strings(keys)
		kc.Keys = keys
		m.keychainIdx[kc.ID] = len(m.Keychains)
		m.Keychains = append(m.Keychains, kc)
	}
	// org references are checked once organizations are known (orgs).
}

func (r *resolver) roles(builtin, data []Role) {
	m := r.m
	m.roleIdx = map[string]int{}
	m.SystemRoles = map[string]string{}
	for i, role := range builtin {
		role.System = true
		if _, dup := m.roleIdx[role.ID]; dup || role.ID == "" {
			r.add(entry("catalogue roles", i, role.ID), "id", "missing or duplicate")
			continue
		}
		m.SystemRoles[role.Name] = role.ID
		m.roleIdx[role.ID] = len(m.Roles)
		m.Roles = append(m.Roles, role)
	}
	for i, role := range data {
		e := entry("roles", i, role.ID)
		if role.ID == "" && role.Org == "" {
			if id, ok := m.SystemRoles[role.Name]; ok { // extends a default role
				if role.Scope != "" && role.Scope != m.Roles[m.roleIdx[id]].Scope {
					r.add(e, "scope", "default role %q has scope %q", role.Name, m.Roles[m.roleIdx[id]].Scope)
				}
				sys := &m.Roles[m.roleIdx[id]]
				sys.Keychains = append(slices.Clip(sys.Keychains), role.Keychains...)
				sys.OwnerOnly = append(slices.Clip(sys.OwnerOnly), role.OwnerOnly...)
				continue
			}
		}
		switch {
		case role.ID == "":
			r.add(e, "id", "missing")
			continue
		case role.Name == "":
			r.add(e, "name", "missing")
		}
		if !scopes[role.Scope] {
			r.add(e, "scope", "unknown scope %q (want provider, organization, team or workspace)", role.Scope)
		}
		if role.Scope == ScopeProvider && role.Org != "" {
			r.add(e, "scope", "an organization's role cannot have provider scope")
		}
		if _, dup := m.roleIdx[role.ID]; dup {
			r.add(e, "id", "duplicate id %q", role.ID)
			continue
		}
		if role.Org == "" {
			if _, clash := m.SystemRoles[role.Name]; clash {
				r.add(e, "name", "%q is a default role; give the new role another name or an org", role.Name)
			}
		}
		m.roleIdx[role.ID] = len(m.Roles)
		m.Roles = append(m.Roles, role)
	}
	// Resolve keychains and owner-only keys now that every role is known.
	for i := range m.Roles {
		role := &m.Roles[i]
		e := r.roleEntry(i, len(builtin), data, role)
		kcs := []string{}
		for j, ref := range role.Keychains {
			if id, ok := r.keychainRef(e, fmt.Sprintf("keychains[%d]", j), ref, role.Org); ok {
				kcs = appendUnique(kcs, id)
			}
		}
		sort.Strings(kcs)
		role.Keychains = kcs
		held := map[string]bool{}
		for _, kc := range kcs {
			c, _ := m.Keychain(kc)
			for _, k := range c.Keys {
				held[k] = true
			}
		}
		oo := []string{}
		for j, ref := range role.OwnerOnly {
			id, ok := r.keyRef(e, fmt.Sprintf("owner_only[%d]", j), ref)
			if !ok {
				continue
			}
			if !held[id] {
				r.add(e, fmt.Sprintf("owner_only[%d]", j), "key %q is not in any of the role's keychains", ref)
				continue
			}
			oo = appendUnique(oo, id)
		}
		sort.Strings(oo)
		role.OwnerOnly = oo
	}
}

func (r *resolver) roleEntry(i, nBuiltin int, data []Role, role *Role) string {
	if role.System {
		return "catalogue role " + fmt.Sprintf("%q", role.Name)
	}
	for j := range data {
		if data[j].ID == role.ID {
			return entry("roles", j, role.ID)
		}
	}
	return entry("roles", i-nBuiltin, role.ID)
}

// keychainRef resolves a keychain by id, or by name among the system keychains and those of org.
func (r *resolver) keychainRef(e, field, ref, org string) (string, bool) {
	m := r.m
	if i, ok := m.keychainIdx[ref]; ok {
		if kc := m.Keychains[i]; kc.Org != "" && kc.Org != org {
			r.add(e, field, "keychain %q belongs to organization %q", ref, kc.Org)
			return "", false
		}
		return ref, true
	}
	var ids []string
	for _, kc := range m.Keychains {
		if kc.Name == ref && (kc.Org == "" || kc.Org == org) {
			ids = append(ids, kc.ID)
		}
	}
	switch len(ids) {
	case 0:
		r.add(e, field, "unknown keychain %q", ref)
		return "", false
	case 1:
		return ids[0], true
	default:
		r.add(e, field, "ambiguous keychain name %q (ids %s)", ref, strings.Join(ids, ", "))
		return "", false
	}
}

// roleRef resolves a role by id, or by name among the default roles and those of org.
func (r *resolver) roleRef(e, field, ref, org string) (Role, bool) {
	m := r.m
	if role, ok := m.Role(ref); ok {
		return role, true
	}
	var found []Role
	for _, role := range m.Roles {
		if role.Name == ref && (role.Org == "" || role.Org == org) {
			found = append(found, role)
		}
	}
	switch len(found) {
	case 0:
		r.add(e, field, "unknown role %q", ref)
		return Role{}, false
	case 1:
		return found[0], true
	default:
		r.add(e, field, "ambiguous role name %q", ref)
		return Role{}, false
	}
}

func (r *resolver) users(data []User) {
	m := r.m
	m.userIdx = make(map[string]int, len(data))
	m.Users = make([]User, 0, len(data))
	for i, u := range data {
		e := entry("users", i, u.ID)
		if u.ID == "" {
			r.add(e, "id", "missing")
			continue
		}
		if _, dup := m.userIdx[u.ID]; dup {
			r.add(e, "id", "duplicate id %q", u.ID)
			continue
		}
		if u.Plan == "" {
			u.Plan = defaultPlan
		}
		if !plans[u.Plan] {
			r.add(e, "plan", "unknown plan %q (want free, team or enterprise)", u.Plan)
		}
		m.userIdx[u.ID] = len(m.Users)
		m.Users = append(m.Users, u)
	}
}

func (r *resolver) userRef(e, field, id string) bool {
	if id == "" {
		r.add(e, field, "missing")
		return false
	}
	if !r.hasUser(id) {
		r.add(e, field, "unknown user %q", id)
		return false
	}
	return true
}

func (r *resolver) hasUser(id string) bool {
	_, ok := r.m.userIdx[id]
	return ok
}

func (r *resolver) orgs(data []Organization) {
	m := r.m
	m.orgIdx = map[string]int{}
	for i, o := range data {
		e := entry("organizations", i, o.ID)
		if o.ID == "" {
			r.add(e, "id", "missing")
			continue
		}
		if _, dup := m.orgIdx[o.ID]; dup {
			r.add(e, "id", "duplicate id %q", o.ID)
			continue
		}
		r.userRef(e, "owner", o.Owner)
		m.orgIdx[o.ID] = len(m.Organizations)
		m.Organizations = append(m.Organizations, o)
	}
	for i, kc := range m.Keychains {
		if kc.Org != "" {
			if _, ok := m.orgIdx[kc.Org]; !ok {
				r.add(entry("keychains", i, kc.ID), "org", "unknown organization %q", kc.Org)
			}
		}
	}
	for i, role := range m.Roles {
		if role.Org != "" {
			if _, ok := m.orgIdx[role.Org]; !ok {
				r.add(entry("roles", i, role.ID), "org", "unknown organization %q", role.Org)
			}
		}
	}
}

func (r *resolver) orgRef(e, field, id string) bool {
	if id == "" {
		r.add(e, field, "missing")
		return false
	}
	if _, ok := r.m.orgIdx[id]; !ok {
		r.add(e, field, "unknown organization %q", id)
		return false
	}
	return true
}

func (r *resolver) members(e, field string, ids []string) []string {
	out := []string{}
	for j, u := range ids {
		if r.userRef(e, fmt.Sprintf("%s[%d]", field, j), u) {
			out = appendUnique(out, u)
		}
	}
	sort.Strings(out)
	return out
}

func (r *resolver) teams(data []Team) {
	m := r.m
	m.teamIdx = map[string]int{}
	for i, t := range data {
		e := entry("teams", i, t.ID)
		if t.ID == "" {
			r.add(e, "id", "missing")
			continue
		}
		if _, dup := m.teamIdx[t.ID]; dup {
			r.add(e, "id", "duplicate id %q", t.ID)
			continue
		}
		r.orgRef(e, "org", t.Org)
		r.userRef(e, "owner", t.Owner)
		t.Members = r.members(e, "members", t.Members)
		m.teamIdx[t.ID] = len(m.Teams)
		m.Teams = append(m.Teams, t)
	}
}

func (r *resolver) workspaces(data []Workspace) {
	m := r.m
	m.workspaceIdx = map[string]int{}
	for i, w := range data {
		e := entry("workspaces", i, w.ID)
		if w.ID == "" {
			r.add(e, "id", "missing")
			continue
		}
		if _, dup := m.workspaceIdx[w.ID]; dup {
			r.add(e, "id", "duplicate id %q", w.ID)
			continue
		}
		r.orgRef(e, "org", w.Org)
		r.userRef(e, "owner", w.Owner)
		w.Members = r.members(e, "members", w.Members)
		teams := []string{}
		for j, t := range w.Teams {
			if _, ok := m.teamIdx[t]; !ok {
				r.add(e, fmt.Sprintf("teams[%d]", j), "unknown team %q", t)
				continue
			}
			teams = appendUnique(teams, t)
		}
		sort.Strings(teams)
		w.Teams = teams
		m.workspaceIdx[w.ID] = len(m.Workspaces)
		m.Workspaces = append(m.Workspaces, w)
	}
}

func (r *resolver) designs(data []Design) {
	m := r.m
	seen := map[string]bool{}
	for i, d := range data {
		e := entry("designs", i, d.ID)
		if d.ID == "" {
			r.add(e, "id", "missing")
			continue
		}
		if seen[d.ID] {
			r.add(e, "id", "duplicate id %q", d.ID)
			continue
		}
		seen[d.ID] = true
		if _, ok := m.workspaceIdx[d.Workspace]; !ok {
			r.add(e, "workspace", "unknown workspace %q", d.Workspace)
		}
		r.userRef(e, "owner", d.Owner)
		if d.Visibility == "" {
			d.Visibility = defaultDesignVisibility
		}
		if !visibs[d.Visibility] {
			r.add(e, "visibility", "unknown visibility %q (want private, public or published)", d.Visibility)
		}
		m.Designs = append(m.Designs, d)
	}
}

func (r *resolver) assignments(data []Assignment) {
	m := r.m
	seen := make(map[Assignment]int, len(data))
	m.Assignments = make([]Assignment, 0, len(data))
	orgsOf := map[string][]string{} // Free-plan user -> orgs they hold a role in
	for i, a := range data {
		e := entry("assignments", i, "")
		before := len(r.problems)
		r.userRef(e, "user", a.User)
		role, ok := r.roleRef(e, "role", a.Role, a.Org)
		if !ok {
			continue
		}
		a.Role = role.ID
		switch role.Scope {
		case ScopeProvider:
			a.Org, a.Team, a.Workspace = "", "", ""
		case ScopeOrganization:
			r.orgRef(e, "org", a.Org)
			if a.Team != "" || a.Workspace != "" {
				r.add(e, "team", "role %q has organization scope: give no team or workspace", role.Name)
			}
		case ScopeTeam:
			r.orgRef(e, "org", a.Org)
			if a.Workspace != "" {
				r.add(e, "workspace", "role %q has team scope: give a team, not a workspace", role.Name)
			}
			if a.Team == "" {
				r.add(e, "team", "role %q has team scope: a team is required", role.Name)
			} else if t, ok := m.Team(a.Team); !ok {
				r.add(e, "team", "unknown team %q", a.Team)
			} else if t.Org != a.Org {
				r.add(e, "team", "team %q belongs to organization %q, not %q", a.Team, t.Org, a.Org)
			}
		case ScopeWorkspace:
			r.orgRef(e, "org", a.Org)
			if a.Team != "" {
				r.add(e, "team", "role %q has workspace scope: give a workspace, not a team", role.Name)
			}
			if a.Workspace == "" {
				r.add(e, "workspace", "role %q has workspace scope: a workspace is required", role.Name)
			} else if w, ok := m.Workspace(a.Workspace); !ok {
				r.add(e, "workspace", "unknown workspace %q", a.Workspace)
			} else if w.Org != a.Org {
				r.add(e, "workspace", "workspace %q belongs to organization %q, not %q", a.Workspace, w.Org, a.Org)
			}
		}
		if role.Org != "" && role.Org != a.Org {
			r.add(e, "role", "role %q belongs to organization %q, not %q", a.Role, role.Org, a.Org)
		}
		if j, dup := seen[a]; dup {
			r.add(e, "", "duplicate of assignments[%d]", j)
			continue
		}
		seen[a] = i
		if len(r.problems) == before && a.Org != "" && m.Users[m.userIdx[a.User]].Plan == PlanFree {
			orgsOf[a.User] = appendUnique(orgsOf[a.User], a.Org)
		}
		m.Assignments = append(m.Assignments, a)
	}
	for _, u := range m.Users {
		if orgs := orgsOf[u.ID]; len(orgs) > 1 {
			sort.Strings(orgs)
			r.add(entry("users", m.userIdx[u.ID], u.ID), "plan",
				"a Free-plan user belongs to a single organization, but holds roles in %s", strings.Join(orgs, ", "))
		}
	}
}

func (r *resolver) tokens(data []Token) {
	m := r.m
	seen := map[string]bool{}
	for i, t := range data {
		e := entry("tokens", i, t.ID)
		if t.ID == "" {
			r.add(e, "id", "missing")
			continue
		}
		if seen[t.ID] {
			r.add(e, "id", "duplicate id %q", t.ID)
			continue
		}
		seen[t.ID] = true
		r.userRef(e, "user", t.User)
		if t.ExpiresAt != "" {
			ts, err := time.Parse(time.RFC3339, t.ExpiresAt)
			if err != nil {
				r.add(e, "expires_at", "not an RFC 3339 time: %q", t.ExpiresAt)
			} else {
				t.ExpiresAt = ts.UTC().Format(time.RFC3339Nano)
			}
		}
		m.Tokens = append(m.Tokens, t)
	}
}

// RouteParams returns the {param} names of a path pattern in order, and the pattern's segments.
func RouteParams(path string) (segments, params []string) {
	segments = strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, s := range segments {
		if p := paramRe.FindStringSubmatch(s); p != nil {
			params = append(params, p[1])
		}
	}
	return segments, params
}

// ResourceOf splits a route's resource ("type:param" or "type:{param}").
func ResourceOf(resource string) (typ, param string) {
	typ, param, _ = strings.Cut(resource, ":")
	return typ, strings.TrimSuffix(strings.TrimPrefix(param, "{"), "}")
}

func (r *resolver) routes(all []Route, nBuiltin int) {
	m := r.m
	seen := map[[3]string]int{}
	for i, rt := range all {
		e := entry("routes", i-nBuiltin, "")
		if i < nBuiltin {
			e = entry("catalogue routes", i, "")
		}
		if rt.Service == "" {
			r.add(e, "service", "missing")
		}
		rt.Method = strings.ToUpper(rt.Method)
		if !methodRe.MatchString(rt.Method) {
			r.add(e, "method", "not an HTTP method: %q", rt.Method)
		}
		if !strings.HasPrefix(rt.Path, "/") || rt.Path == "/" {
			r.add(e, "path", "want an absolute path pattern such as /api/identity/orgs/{org}, got %q", rt.Path)
			continue
		}
		segs, params := RouteParams(rt.Path)
		have := map[string]bool{}
		for j, s := range segs {
			switch {
			case s == "" || s == "." || s == "..":
				r.add(e, "path", "segment %d is empty, . or ..", j)
			case strings.ContainsAny(s, "{}") && !paramRe.MatchString(s):
				r.add(e, "path", "segment %q: a parameter is a whole segment {name}", s)
			}
		}
		for _, p := range params {
			if have[p] {
				r.add(e, "path", "parameter {%s} appears twice", p)
			}
			have[p] = true
		}
		if rt.OrgFrom == "" {
			rt.OrgFrom = OrgFromHeader
		}
		rt.OrgFrom = strings.TrimSuffix(strings.TrimPrefix(rt.OrgFrom, "{"), "}")
		if rt.OrgFrom != OrgFromHeader && !have[rt.OrgFrom] {
			r.add(e, "org_from", "want \"header\" or a parameter of the path, got %q", rt.OrgFrom)
		}
		if rt.Resource != "" {
			typ, param := ResourceOf(rt.Resource)
			if !resTypes[typ] {
				r.add(e, "resource", "unknown resource type %q", typ)
			}
			if !have[param] {
				r.add(e, "resource", "parameter %q is not in the path", param)
			}
			rt.Resource = typ + ":" + param
		}
		if id, ok := r.keyRef(e, "key", rt.Key); ok {
			rt.Key = id
		}
		k := [3]string{rt.Service, rt.Method, rt.Path}
		if j, dup := seen[k]; dup {
			r.add(e, "", "duplicate of routes[%d] (%s %s %s)", j-nBuiltin, rt.Service, rt.Method, rt.Path)
			continue
		}
		seen[k] = i
		m.Routes = append(m.Routes, rt)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func appendUnique(s []string, v string) []string {
	if contains(s, v) {
		return s
	}
	return append(s, v)
}
