package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/keygate/keygate/internal/engine"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/synth"
)

// BenchmarkAssignDecision measures data.keygate.assign.decision (p50/p99) on the synthetic users plus what an
// assignment decision needs that synth does not make: custom roles (one org in ten has an Auditor, an HR role
// holding Edit User and a custom team role), teams with members, per such org an HR holder, a Team Lead and a
// Team Admin who is not an Organization Admin, and soft-deleted users. The inputs cycle over every rule of the table, allowed and denied: see assignBenchInputs.
func BenchmarkAssignDecision(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			snap := assignBenchSnapshot(n)
			s := loadScale(b, "assign", snap)
			pq, _ := s.eng.Prepared(engine.AssignDecision)
			inputs, kinds := assignBenchInputs(snap)
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			byKind := map[string]int{}
			kindLat := map[string][]time.Duration{}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				v, err := s.eng.Hot().Eval(ctx, &pq, inputs[i%len(inputs)], 10*time.Second) // generous: a loaded machine must not fail the run
				d := time.Since(start)
				lat = append(lat, d)
				if err != nil || v == nil {
					b.Fatalf("eval: %v (%v)", err, v)
				}
				kind := kinds[i%len(inputs)]
				kindLat[kind] = append(kindLat[kind], d)
				if i < len(inputs) {
					byKind[kind+" -> "+assignOutcome(v)]++
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-us")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-us")
			if b.N >= len(inputs) {
				for _, k := range slices.Sorted(maps(byKind)) {
					b.Logf("%4d  %s", byKind[k], k)
				}
				for _, k := range slices.Sorted(maps(kindLat)) {
					l := kindLat[k]
					slices.Sort(l)
					b.Logf("p50 %8.1f us  %s", float64(l[len(l)/2].Nanoseconds())/1e3, k)
				}
			}
		})
	}
}

func maps[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// assignOutcome is "allow via=X" or "deny R1,R2".
func assignOutcome(v ast.Value) string {
	o, ok := v.(ast.Object)
	if !ok {
		return "not an object"
	}
	if isAllowedValue(v) {
		via := o.Get(ast.InternedTerm("via"))
		return "allow via=" + strings.Trim(via.String(), `"`)
	}
	return "deny " + o.Get(ast.InternedTerm("reasons")).String()
}

// assignBenchSnapshot is synth's snapshot of n users plus custom roles, team members and deleted users.
func assignBenchSnapshot(n int) model.Snapshot {
	s := synth.Generate(synth.Config{Users: n})
	nOrgs := len(s.Organizations)
	for o := range nOrgs {
		org := synth.OrgID(o)
		// Team o gets eight members of its org (users homed there: o + k*nOrgs).
		for k := 1; k <= 8 && o+k*nOrgs < n; k++ {
			s.Teams[o].Members = append(s.Teams[o].Members, synth.UserID(o+k*nOrgs))
		}
		if o%10 != 0 {
			continue
		}
		kcAudit, kcHR := fmt.Sprintf("kc-audit-%d", o), fmt.Sprintf("kc-hr-%d", o)
		s.Keychains = append(s.Keychains,
			model.Keychain{ID: kcAudit, Name: "Audit", Org: org, Keys: []string{"View All Teams"}},
			model.Keychain{ID: kcHR, Name: "HR", Org: org, Keys: []string{"Edit User", "View All Teams"}})
		s.Roles = append(s.Roles,
			model.Role{ID: fmt.Sprintf("r-auditor-%d", o), Name: "Auditor", Scope: model.ScopeOrganization, Org: org, Keychains: []string{kcAudit}},
			model.Role{ID: fmt.Sprintf("r-hr-%d", o), Name: "HR", Scope: model.ScopeOrganization, Org: org, Keychains: []string{kcHR}},
			model.Role{ID: fmt.Sprintf("r-lead-%d", o), Name: "Team Lead", Scope: model.ScopeTeam, Org: org, Keychains: []string{kcHR}})
		if hr := o + nOrgs; hr < n {
			s.Assignments = append(s.Assignments, model.Assignment{User: synth.UserID(hr), Role: fmt.Sprintf("r-hr-%d", o), Org: org})
		}
		if lead := o + 2*nOrgs; lead < n {
			s.Assignments = append(s.Assignments, model.Assignment{User: synth.UserID(lead), Role: fmt.Sprintf("r-lead-%d", o), Org: org, Team: s.Teams[o].ID})
		}
		if ta := o + 3*nOrgs; ta < n { // a Team Admin who is not an Organization Admin
			s.Assignments = append(s.Assignments, model.Assignment{User: synth.UserID(ta), Role: model.RoleTeamAdmin, Org: org, Team: s.Teams[o].ID})
		}
	}
	for i := 3*nOrgs + 5; i < n; i += 997 { // never an org owner, HR holder or Team Lead
		s.Users[i].Deleted = true
	}
	return s
}

// assignBenchInputs cycles over the rules of the assignment table, for many orgs, actors and targets: each
// kind is one row of the table, allowed or denied for one reason, named in the second result. Actors and
// targets are picked from the assignments by what they hold in the org.
func assignBenchInputs(s model.Snapshot) ([]ast.Value, []string) {
	nOrgs := len(s.Organizations)
	deleted := map[string]bool{}
	var deletedIDs []string
	for _, u := range s.Users {
		if u.Deleted {
			deleted[u.ID] = true
			deletedIDs = append(deletedIDs, u.ID)
		}
	}
	held := map[string]map[string][]string{} // org -> user -> roles
	for _, a := range s.Assignments {
		if a.Org == "" || deleted[a.User] {
			continue
		}
		if held[a.Org] == nil {
			held[a.Org] = map[string][]string{}
		}
		held[a.Org][a.User] = append(held[a.Org][a.User], a.Role)
	}
	owners := map[string]string{}
	for _, o := range s.Organizations {
		owners[o.ID] = o.Owner
	}
	// admins: Organization Admins other than the owner (synth makes them in every fourth org).
	admins, plain, members := map[string][]string{}, map[string][]string{}, map[string][]string{}
	for org, users := range held {
		for u, roles := range users {
			members[org] = append(members[org], u)
			if slices.Contains(roles, model.RoleOrganizationAdmin) && u != owners[org] {
				admins[org] = append(admins[org], u)
			}
			if len(roles) == 1 && roles[0] == model.RoleUser {
				plain[org] = append(plain[org], u)
			}
		}
	}
	for _, m := range []map[string][]string{admins, plain, members} {
		for _, l := range m {
			slices.Sort(l)
		}
	}
	pick := func(l []string, k int) string { return l[k%len(l)] }
	type in = map[string]any
	kinds := []struct {
		name string
		make func(o, k int) in
	}{
		{"org admin assigns User", func(o, k int) in {
			o -= o % 4
			org := synth.OrgID(o)
			return in{"actor": pick(admins[org], k), "action": "assign", "role": "User", "user": pick(members[org], k*7), "org": org}
		}},
		{"plain user assigns User", func(o, k int) in {
			org := synth.OrgID(o)
			return in{"actor": pick(plain[org], k), "action": "assign", "role": "User", "user": pick(members[org], k*7), "org": org}
		}},
		{"owner assigns Organization Admin", func(o, k int) in {
			org := synth.OrgID(o)
			return in{"actor": s.Organizations[o].Owner, "action": "assign", "role": "Organization Admin", "user": pick(plain[org], k), "org": org}
		}},
		{"org admin assigns Organization Admin", func(o, k int) in {
			o -= o % 4
			org := synth.OrgID(o)
			return in{"actor": pick(admins[org], k+1), "action": "assign", "role": "Organization Admin", "user": pick(plain[org], k), "org": org}
		}},
		{"owner unassigns an admin", func(o, k int) in {
			o -= o % 4
			org := synth.OrgID(o)
			return in{"actor": s.Organizations[o].Owner, "action": "unassign", "role": "Organization Admin", "user": pick(admins[org], k), "org": org}
		}},
		{"org admin assigns Team Manager", func(o, k int) in {
			o -= o % 4
			org := synth.OrgID(o)
			return in{"actor": pick(admins[org], k), "action": "assign", "role": "Team Manager", "user": pick(members[org], k), "org": org, "team": s.Teams[o].ID}
		}},
		{"Team Manager without a team", func(o, k int) in {
			o -= o % 4
			org := synth.OrgID(o)
			return in{"actor": pick(admins[org], k), "action": "assign", "role": "Team Manager", "user": pick(members[org], k), "org": org}
		}},
		{"Workspace Admin of another org's workspace", func(o, k int) in {
			o -= o % 4
			org := synth.OrgID(o)
			return in{"actor": pick(admins[org], k), "action": "assign", "role": "Workspace Admin", "user": pick(members[org], k), "org": org, "workspace": s.Workspaces[(o+1)%nOrgs].ID}
		}},
		{"team admin assigns a custom role, no team named", func(o, k int) in {
			o -= o % 10
			return in{"actor": synth.UserID(o + 3*nOrgs), "action": "assign", "role": "Auditor", "user": pick(s.Teams[o].Members[1:], k), "org": synth.OrgID(o)}
		}},
		{"Edit User holder assigns a custom role", func(o, k int) in {
			o -= o % 10
			org := synth.OrgID(o)
			return in{"actor": synth.UserID(o + nOrgs), "action": "assign", "role": "Auditor", "user": pick(plain[org], k), "org": org}
		}},
		{"Edit User holder assigns Organization Admin", func(o, k int) in {
			o -= o % 10
			org := synth.OrgID(o)
			return in{"actor": synth.UserID(o + nOrgs), "action": "assign", "role": "Organization Admin", "user": pick(plain[org], k), "org": org}
		}},
		{"custom team role's Edit User, no team named", func(o, k int) in {
			o -= o % 10
			return in{"actor": synth.UserID(o + 2*nOrgs), "action": "assign", "role": "HR", "user": pick(s.Teams[o].Members[1:], k), "org": synth.OrgID(o)}
		}},
		{"unknown role", func(o, k int) in {
			o -= o % 4
			org := synth.OrgID(o)
			return in{"actor": pick(admins[org], k), "action": "assign", "role": "Janitor", "user": pick(members[org], k), "org": org}
		}},
		{"deleted target", func(o, k int) in {
			org := synth.OrgID(o)
			return in{"actor": s.Organizations[o].Owner, "action": "assign", "role": "User", "user": pick(deletedIDs, k), "org": org}
		}},
		{"provider admin assigns Organization Admin", func(o, k int) in {
			org := synth.OrgID(o)
			return in{"actor": synth.UserID(0), "action": "assign", "role": "Organization Admin", "user": pick(plain[org], k), "org": org}
		}},
		{"malformed: no actor", func(o, k int) in {
			org := synth.OrgID(o)
			return in{"action": "assign", "role": "User", "user": pick(members[org], k), "org": org}
		}},
	}
	var out []ast.Value
	var names []string
	for i := range 1024 {
		kind := kinds[i%len(kinds)]
		v, err := ast.InterfaceToValue(kind.make((i*7919)%nOrgs, i/len(kinds)))
		if err != nil {
			panic(err)
		}
		out = append(out, v)
		names = append(names, kind.name)
	}
	return out, names
}
