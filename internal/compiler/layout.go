package compiler

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/model"
)

// layout is the decision-shaped form of a model (docs/data-layout.md). Every map is written with sorted keys.
type layout struct {
	m *model.Model

	rolesets     []roleset                 // by index
	rolesetIDs   []string                  // by index: the id in the data (rolesetIDs)
	twins        map[int]bool              // role sets some restricted member holds in an org (see twin)
	orgMembers   map[string]map[string]int // org -> user -> roleset, or twin(roleset) for a restricted user
	teamRoles    map[string]map[string]int // team -> user -> roleset
	wsRoles      map[string]map[string]int // workspace -> user -> roleset
	orgAdmins    map[string]int            // org -> number of Organization Admin assignments
	teamAdmins   map[string]map[string]bool
	roleTeams    map[string]map[string][]string // org -> user -> sorted teams of the org where the user holds a team role
	wsAdmins     map[string]map[string]bool
	providers    map[string]bool
	profileAdmin map[string]bool
	free         map[string]string
	roleKeys     map[string]map[string]bool // role -> key -> owner-only
	userRole     string
}

type roleset struct {
	roles    []string
	keys     map[string]bool // key -> owner-only (true only if every granting role grants it owner-only)
	editUser bool            // a custom role of the set grants Edit User unrestricted (the assign table's edit_user path)
}

// plan computes the layout of a model.
func plan(m *model.Model) *layout {
	l := &layout{
		m:            m,
		twins:        map[int]bool{},
		orgMembers:   map[string]map[string]int{},
		teamRoles:    map[string]map[string]int{},
		wsRoles:      map[string]map[string]int{},
		orgAdmins:    map[string]int{},
		teamAdmins:   map[string]map[string]bool{},
		roleTeams:    map[string]map[string][]string{},
		wsAdmins:     map[string]map[string]bool{},
		providers:    map[string]bool{},
		profileAdmin: map[string]bool{},
		free:         map[string]string{},
		roleKeys:     map[string]map[string]bool{},
	}
	for _, r := range m.Roles {
		l.roleKeys[r.ID] = m.RoleKeys(r.ID)
	}
	sys := m.SystemRoles
	l.userRole = sys[model.RoleUser]
	updateProfile := m.KeyNames[model.KeyUpdateProfile]

	// Group each user's roles per place (org, team or workspace). Assignments are visited in order of user
	// and place, so each group is a run of consecutive entries.
	type held struct {
		kind  byte // 'o' org, 't' team, 'w' workspace
		place string
		user  string
		role  string
	}
	deleted := map[string]bool{}
	for _, u := range m.Users {
		if u.Deleted {
			deleted[u.ID] = true
		}
	}
	list := make([]held, 0, len(m.Assignments))
	for _, a := range m.Assignments {
		role, _ := m.Role(a.Role)
		switch role.Scope {
		case model.ScopeProvider:
			l.providers[a.User] = true
			continue
		case model.ScopeOrganization:
			list = append(list, held{'o', a.Org, a.User, a.Role})
			if a.Role == sys[model.RoleOrganizationAdmin] && !deleted[a.User] {
				l.orgAdmins[a.Org]++ // a deleted admin administers nothing: not counted (last-admin invariant)
			}
		case model.ScopeTeam:
			list = append(list, held{'t', a.Team, a.User, a.Role})
			if a.Role == sys[model.RoleTeamAdmin] {
				addSet(l.teamAdmins, a.Org, a.User)
			}
			if l.roleTeams[a.Org] == nil {
				l.roleTeams[a.Org] = map[string][]string{}
			}
			l.roleTeams[a.Org][a.User] = append(l.roleTeams[a.Org][a.User], a.Team)
		case model.ScopeWorkspace:
			list = append(list, held{'w', a.Workspace, a.User, a.Role})
			if a.Role == sys[model.RoleWorkspaceAdmin] {
				addSet(l.wsAdmins, a.Org, a.User)
			}
		}
		if !role.System && updateProfile != "" {
			if _, ok := l.roleKeys[a.Role][updateProfile]; ok {
				l.profileAdmin[a.User] = true
			}
		}
	}
	slices.SortFunc(list, func(a, b held) int {
		if c := strings.Compare(a.user, b.user); c != 0 {
			return c
		}
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		if c := strings.Compare(a.place, b.place); c != 0 {
			return c
		}
		return strings.Compare(a.role, b.role)
	})

	// Intern role sets: one temporary number per distinct sorted role list, renumbered in sorted order below.
	type group struct {
		kind        byte
		place, user string
		tmp         int
	}
	intern := map[string]int{}
	var lists [][]string
	groups := make([]group, 0, len(list))
	var key strings.Builder
	for i := 0; i < len(list); {
		j := i
		key.Reset()
		var roles []string
		for ; j < len(list) && list[j].user == list[i].user && list[j].kind == list[i].kind && list[j].place == list[i].place; j++ {
			if len(roles) > 0 && roles[len(roles)-1] == list[j].role {
				continue
			}
			roles = append(roles, list[j].role)
			key.WriteString(list[j].role)
			key.WriteByte(',')
		}
		n, ok := intern[key.String()]
		if !ok {
			n = len(lists)
			intern[key.String()] = n
			lists = append(lists, roles)
		}
		groups = append(groups, group{list[i].kind, list[i].place, list[i].user, n})
		i = j
	}
	order := make([]int, len(lists))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return strings.Join(lists[order[a]], ",") < strings.Join(lists[order[b]], ",") })
	final := make([]int, len(lists))
	for n, tmp := range order {
		final[tmp] = n
		l.rolesets = append(l.rolesets, l.newRoleset(lists[tmp]))
	}
	l.rolesetIDs = rolesetIDs(l.rolesets)
	restricted := maps.Clone(l.providers)
	maps.Copy(restricted, deleted)
	for _, g := range groups {
		n := final[g.tmp]
		switch g.kind {
		case 'o':
			if restricted[g.user] {
				l.twins[n] = true
				n = twin(n)
			}
			setIn(l.orgMembers, g.place, g.user, n)
		case 't':
			setIn(l.teamRoles, g.place, g.user, n)
		case 'w':
			setIn(l.wsRoles, g.place, g.user, n)
		}
	}
	for _, users := range l.roleTeams {
		for u, teams := range users {
			slices.Sort(teams)
			users[u] = slices.Compact(teams)
		}
	}
	for _, u := range m.Users {
		if u.Plan == model.PlanFree {
			l.free[u.ID] = ""
		}
	}
	for _, a := range m.Assignments {
		if _, ok := l.free[a.User]; ok && a.Org != "" {
			l.free[a.User] = a.Org
		}
	}
	return l
}

// twin numbers the twin of role set n: the same roles, keys and grants, but no fast entries. A deleted user's
// and a Provider Admin's org memberships point at twins, so the policies' fast paths, which assume a live
// user whose org role set is the only grant source, never apply to them. Written as "r<id>" (rolesetName).
// twin is its own inverse: twin(twin(n)) == n.
func twin(n int) int { return -n - 1 }

// rolesetName is the id of role set n (or of a twin) in the data.
func (l *layout) rolesetName(n int) string {
	if n < 0 {
		return "r" + l.rolesetIDs[twin(n)]
	}
	return l.rolesetIDs[n]
}

// rolesetIDs names role sets by their content, so that a set keeps its id when other sets appear or go and a
// change to one membership changes one value of the data (delta bundles stay small): the first 8 hex digits
// of the SHA-256 of the set's sorted role ids, 16 for sets whose 8 digits another set of the same data shares,
// all 64 if 16 are shared too.
func rolesetIDs(sets []roleset) []string {
	full := make([]string, len(sets))
	for i, rs := range sets {
		h := sha256.Sum256([]byte(strings.Join(rs.roles, "\x00")))
		full[i] = hex.EncodeToString(h[:])
	}
	ids := make([]string, len(sets))
	for i := range ids {
		ids[i] = full[i][:8]
	}
	for _, n := range []int{16, 64} {
		count := map[string]int{}
		for _, id := range ids {
			count[id]++
		}
		for i, id := range ids {
			if count[id] > 1 {
				ids[i] = full[i][:n]
			}
		}
	}
	return ids
}

func (l *layout) newRoleset(roles []string) roleset {
	rs := roleset{roles: roles, keys: map[string]bool{}}
	editUser := l.m.KeyNames[model.KeyEditUser]
	for _, r := range roles {
		if role, _ := l.m.Role(r); l.m.SystemRoles[role.Name] != r {
			if ownerOnly, ok := l.roleKeys[r][editUser]; ok && !ownerOnly && editUser != "" {
				rs.editUser = true
			}
		}
		for k, ownerOnly := range l.roleKeys[r] {
			if prev, ok := rs.keys[k]; ok {
				rs.keys[k] = prev && ownerOnly
			} else {
				rs.keys[k] = ownerOnly
			}
		}
	}
	return rs
}

func addSet(m map[string]map[string]bool, k, v string) {
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	m[k][v] = true
}

func setIn(m map[string]map[string]int, k, u string, n int) {
	if m[k] == nil {
		m[k] = map[string]int{}
	}
	m[k][u] = n
}

// write encodes the layout as canonical JSON: compact, keys sorted, no HTML escaping. These are the bytes OPA's
// structured-data hashing produces for the parsed document, so signatures over them verify.
func (l *layout) write(w *jsonWriter) {
	m := l.m
	w.open()
	w.key("collaborator_keys")
	w.keyFlags(l.roleKeys[l.userRole])

	w.key("deleted")
	w.open()
	for _, u := range sortedBy(m.Users, func(u model.User) string { return u.ID }) {
		if u.Deleted {
			w.key(u.ID)
			w.raw("true")
		}
	}
	w.close()

	w.key("designs")
	w.open()
	for _, d := range sortedBy(m.Designs, func(d model.Design) string { return d.ID }) {
		ws, _ := m.Workspace(d.Workspace)
		w.key(d.ID)
		w.open()
		w.field("org", ws.Org)
		w.field("owner", d.Owner)
		w.field("visibility", d.Visibility)
		w.field("workspace", d.Workspace)
		w.close()
	}
	w.close()

	w.key("free")
	w.open()
	for _, u := range slices.Sorted(maps.Keys(l.free)) {
		w.field(u, l.free[u])
	}
	w.close()

	w.key("key_ids")
	w.open()
	for _, name := range slices.Sorted(maps.Keys(m.KeyNames)) {
		w.field(name, m.KeyNames[name])
	}
	w.close()

	w.key("keychains")
	w.open()
	for _, kc := range sortedBy(m.Keychains, func(k model.Keychain) string { return k.ID }) {
		w.key(kc.ID)
		w.open()
		w.key("keys")
		w.set(kc.Keys)
		w.field("name", kc.Name)
		w.field("org", kc.Org)
		w.close()
	}
	w.close()

	w.key("keys")
	w.open()
	for _, k := range sortedBy(m.Keys, func(k model.Key) string { return k.ID }) {
		w.key(k.ID)
		w.open()
		w.field("category", k.Category)
		w.field("function", k.Function)
		w.field("name", k.Name)
		w.close()
	}
	w.close()

	w.key("orgs")
	w.open()
	for _, o := range sortedBy(m.Organizations, func(o model.Organization) string { return o.ID }) {
		w.key(o.ID)
		w.open()
		w.key("admins")
		w.raw(strconv.Itoa(l.orgAdmins[o.ID]))
		w.key("members")
		w.rolesetMap(l.orgMembers[o.ID], l.rolesetName)
		w.field("name", o.Name)
		w.field("owner", o.Owner)
		w.key("role_teams")
		w.open()
		for _, u := range slices.Sorted(maps.Keys(l.roleTeams[o.ID])) {
			w.key(u)
			w.list(l.roleTeams[o.ID][u])
		}
		w.close()
		w.key("team_admins")
		w.set(slices.Sorted(maps.Keys(l.teamAdmins[o.ID])))
		w.key("workspace_admins")
		w.set(slices.Sorted(maps.Keys(l.wsAdmins[o.ID])))
		w.close()
	}
	w.close()

	w.key("profile_admins")
	w.set(slices.Sorted(maps.Keys(l.profileAdmin)))

	w.key("provider_admins")
	w.set(slices.Sorted(maps.Keys(l.providers)))

	// Every key's grant paths through the Provider Admin role, which holds every key (through its keychains
	// where they list the key, else through the role itself).
	w.key("provider_grants")
	w.open()
	pa, _ := m.Role(m.SystemRoles[model.RoleProviderAdmin])
	for _, k := range sortedBy(m.Keys, func(k model.Key) string { return k.ID }) {
		w.key(k.ID)
		w.arr()
		l.writeRoleGrants(w, pa, k.ID, false, model.ScopeProvider)
		w.closeArr()
	}
	w.close()

	w.key("role_ids")
	w.open()
	roleIDs := map[string]string{}
	for _, r := range m.Roles {
		roleIDs[r.Org+"/"+r.Name] = r.ID
		roleIDs[r.ID] = r.ID
	}
	for _, k := range slices.Sorted(maps.Keys(roleIDs)) {
		w.field(k, roleIDs[k])
	}
	w.close()

	w.key("roles")
	w.open()
	for _, r := range sortedBy(m.Roles, func(r model.Role) string { return r.ID }) {
		w.key(r.ID)
		w.open()
		w.key("keychains")
		w.list(r.Keychains)
		w.key("keys")
		w.keyFlags(l.roleKeys[r.ID])
		w.field("name", r.Name)
		w.field("org", r.Org)
		w.field("scope", r.Scope)
		w.key("system")
		w.raw(strconv.FormatBool(r.System))
		w.close()
	}
	w.close()

	w.key("rolesets")
	w.open()
	// Keys of an object are sorted as strings ("10" < "2"), as OPA hashes them.
	rsNames := map[string]int{}
	for i := range l.rolesets {
		rsNames[l.rolesetName(i)] = i
		if l.twins[i] {
			rsNames[l.rolesetName(twin(i))] = twin(i)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(rsNames)) {
		i := rsNames[n]
		live := i >= 0 // a twin's members are deleted users or Provider Admins
		if !live {
			i = twin(i)
		}
		rs := l.rolesets[i]
		w.key(n)
		w.open()
		l.writeDeny(w, rs, live)
		w.key("edit_user")
		w.raw(strconv.FormatBool(rs.editUser))
		l.writeFast(w, rs, live)
		w.key("grants")
		w.open()
		for _, k := range slices.Sorted(maps.Keys(rs.keys)) {
			w.key(k)
			w.arr()
			for _, role := range rs.roles {
				if ownerOnly, ok := l.roleKeys[role][k]; ok {
					r, _ := m.Role(role)
					l.writeRoleGrants(w, r, k, ownerOnly, r.Scope)
				}
			}
			w.closeArr()
		}
		w.close()
		w.key("keys")
		w.keyFlags(rs.keys)
		l.writeOpenGrants(w, rs, live)
		w.key("roles")
		w.set(rs.roles)
		w.close()
	}
	w.close()

	w.key("routes")
	l.writeRoutes(w)

	w.key("settings")
	w.open()
	w.key("assign_key_subset")
	w.raw(strconv.FormatBool(m.Settings.AssignKeySubset))
	w.close()

	w.key("system_roles")
	w.open()
	for _, name := range slices.Sorted(maps.Keys(m.SystemRoles)) {
		w.field(name, m.SystemRoles[name])
	}
	w.close()

	w.key("teams")
	w.open()
	for _, t := range sortedBy(m.Teams, func(t model.Team) string { return t.ID }) {
		w.key(t.ID)
		w.open()
		w.key("members")
		w.set(t.Members)
		w.field("name", t.Name)
		w.field("org", t.Org)
		w.field("owner", t.Owner)
		w.key("roles")
		w.rolesetMap(l.teamRoles[t.ID], l.rolesetName)
		w.close()
	}
	w.close()

	w.key("tokens")
	w.open()
	for _, t := range sortedBy(m.Tokens, func(t model.Token) string { return t.ID }) {
		w.key(t.ID)
		w.open()
		var ns int64
		if t.ExpiresAt != "" {
			ts, _ := time.Parse(time.RFC3339Nano, t.ExpiresAt)
			ns = ts.UnixNano()
		}
		w.key("expires_ns")
		w.raw(strconv.FormatInt(ns, 10))
		w.key("revoked")
		w.raw(strconv.FormatBool(t.Revoked))
		w.field("user", t.User)
		w.close()
	}
	w.close()

	w.key("workspaces")
	w.open()
	for _, ws := range sortedBy(m.Workspaces, func(w model.Workspace) string { return w.ID }) {
		w.key(ws.ID)
		w.open()
		w.key("members")
		w.set(ws.Members)
		w.field("name", ws.Name)
		w.field("org", ws.Org)
		w.field("owner", ws.Owner)
		w.key("roles")
		w.rolesetMap(l.wsRoles[ws.ID], l.rolesetName)
		w.key("teams")
		w.set(ws.Teams)
		w.close()
	}
	w.close()
	w.close()
}

// writeDeny and writeFast write the two name-keyed maps the policies' fast paths read of a role set
// (docs/data-layout.md), both empty for a twin (live is false): "deny", every name, alias and id of a key a live
// member holding only this set is refused without a resource, with the decision's key id and reasons
// (owner_only: the set grants it owner-only; owner_required: Delete Organization, the policy checks the user is
// not the org's owner; no_grant: the set does not grant it; Create Organization depends on the user's plan and
// is never listed); and "fast", every name, alias and id of a key the set grants unrestricted (fastKey) -> the
// key's id. writeOpenGrants writes the grant paths of the "fast" keys.
func (l *layout) writeDeny(w *jsonWriter, rs roleset, live bool) {
	m := l.m
	w.key("deny")
	w.open()
	for _, name := range slices.Sorted(maps.Keys(m.KeyNames)) {
		id := m.KeyNames[name]
		if !live || l.fastKey(rs, id) || id == m.KeyNames[model.KeyCreateOrganization] {
			continue
		}
		reason := "no_grant"
		if ownerOnly, ok := rs.keys[id]; ok && ownerOnly {
			reason = "owner_only"
		}
		if id == m.KeyNames[model.KeyDeleteOrganization] {
			reason = "owner_required"
		}
		w.key(name)
		w.open()
		w.field("key", id)
		w.key("reasons")
		w.list([]string{reason})
		w.close()
	}
	w.close()
}

func (l *layout) writeFast(w *jsonWriter, rs roleset, live bool) {
	m := l.m
	w.key("fast")
	w.open()
	for _, name := range slices.Sorted(maps.Keys(m.KeyNames)) {
		if id := m.KeyNames[name]; live && l.fastKey(rs, id) {
			w.field(name, id)
		}
	}
	w.close()
}

// fastKey: rs grants k unrestricted, and k is neither Delete Organization (only the org's owner holds it) nor
// Create Organization (denied to a Free-plan user who already belongs to an org): those take the general path.
func (l *layout) fastKey(rs roleset, k string) bool {
	ownerOnly, ok := rs.keys[k]
	return ok && !ownerOnly && k != l.m.KeyNames[model.KeyDeleteOrganization] && k != l.m.KeyNames[model.KeyCreateOrganization]
}

// writeOpenGrants writes "open_grants": the unrestricted grant paths of each "fast" key (writeFast), in the
// order Rego's sort gives them, so a fast decision is a lookup, not a comprehension. Empty for a twin.
func (l *layout) writeOpenGrants(w *jsonWriter, rs roleset, live bool) {
	m := l.m
	w.key("open_grants")
	w.open()
	for _, k := range slices.Sorted(maps.Keys(rs.keys)) {
		if !live || !l.fastKey(rs, k) {
			continue
		}
		var gs []grantPath
		for _, role := range rs.roles {
			if ownerOnly, ok := l.roleKeys[role][k]; ok && !ownerOnly {
				r, _ := m.Role(role)
				gs = append(gs, l.roleGrants(r, k)...)
			}
		}
		// OPA orders objects with the same keys by their values in key order: key (the same here), keychain,
		// owner_only (false here), role, scope, via ("role" here).
		slices.SortFunc(gs, func(a, b grantPath) int {
			return cmp.Or(cmp.Compare(a.keychain.ID, b.keychain.ID), cmp.Compare(a.keychain.Name, b.keychain.Name),
				cmp.Compare(a.role.ID, b.role.ID), cmp.Compare(a.role.Name, b.role.Name), cmp.Compare(a.role.Scope, b.role.Scope))
		})
		w.key(k)
		w.arr()
		for _, g := range gs {
			l.writeGrant(w, g.role, k, g.keychain, false, g.role.Scope)
		}
		w.closeArr()
	}
	w.close()
}

// grantPath is one (role, keychain) by which a role set holds a key.
type grantPath struct {
	role     model.Role
	keychain model.Keychain
}

// roleGrants lists the keychains of r that list key, or one empty keychain when none does (a Provider
// Admin's other keys).
func (l *layout) roleGrants(r model.Role, key string) []grantPath {
	var out []grantPath
	for _, id := range r.Keychains {
		if kc, _ := l.m.Keychain(id); hasSorted(kc.Keys, key) {
			out = append(out, grantPath{r, kc})
		}
	}
	if len(out) == 0 {
		out = append(out, grantPath{role: r})
	}
	return out
}

// writeRoleGrants writes the grant paths (docs/decisions.md) by which role holds key: one per keychain of the
// role that lists the key, or one with an empty keychain when none does (a Provider Admin's other keys).
func (l *layout) writeRoleGrants(w *jsonWriter, r model.Role, key string, ownerOnly bool, scope string) {
	for _, g := range l.roleGrants(r, key) {
		l.writeGrant(w, r, key, g.keychain, ownerOnly, scope)
	}
}

func (l *layout) writeGrant(w *jsonWriter, r model.Role, key string, kc model.Keychain, ownerOnly bool, scope string) {
	k, _ := l.m.Key(key)
	w.elem()
	w.open()
	w.key("key")
	w.open()
	w.field("id", k.ID)
	w.field("name", k.Name)
	w.close()
	w.key("keychain")
	w.open()
	w.field("id", kc.ID)
	w.field("name", kc.Name)
	w.close()
	w.key("owner_only")
	w.raw(strconv.FormatBool(ownerOnly))
	w.key("role")
	w.open()
	w.field("id", r.ID)
	w.field("name", r.Name)
	w.close()
	w.field("scope", scope)
	w.field("via", "role")
	w.close()
}

func (l *layout) writeRoutes(w *jsonWriter) {
	type bucketKey struct{ service, method, n string }
	buckets := map[string]map[string]map[string][]model.Route{}
	for _, r := range l.m.Routes {
		segs, _ := model.RouteParams(r.Path)
		n := strconv.Itoa(len(segs))
		if buckets[r.Service] == nil {
			buckets[r.Service] = map[string]map[string][]model.Route{}
		}
		if buckets[r.Service][r.Method] == nil {
			buckets[r.Service][r.Method] = map[string][]model.Route{}
		}
		buckets[r.Service][r.Method][n] = append(buckets[r.Service][r.Method][n], r)
	}
	w.open()
	for _, svc := range slices.Sorted(maps.Keys(buckets)) {
		w.key(svc)
		w.open()
		for _, method := range slices.Sorted(maps.Keys(buckets[svc])) {
			w.key(method)
			w.open()
			for _, n := range slices.Sorted(maps.Keys(buckets[svc][method])) {
				w.key(n)
				w.arr()
				routes := buckets[svc][method][n]
				sort.Slice(routes, func(i, j int) bool { return routes[i].Path < routes[j].Path })
				for _, r := range routes {
					segs, _ := model.RouteParams(r.Path)
					typ, param := "", ""
					if r.Resource != "" {
						typ, param = model.ResourceOf(r.Resource)
					}
					w.elem()
					w.open()
					w.field("key", r.Key)
					w.field("org_from", r.OrgFrom)
					w.field("pattern", r.Path)
					w.field("resource_param", param)
					w.field("resource_type", typ)
					w.key("segments")
					w.list(segs)
					w.close()
				}
				w.closeArr()
			}
			w.close()
		}
		w.close()
	}
	w.close()
}

func sortedBy[T any](s []T, id func(T) string) []T {
	out := slices.Clone(s)
	sort.Slice(out, func(i, j int) bool { return id(out[i]) < id(out[j]) })
	return out
}

// hasSorted reports whether a sorted list holds v.
func hasSorted(list []string, v string) bool {
	_, found := slices.BinarySearch(list, v)
	return found
}
