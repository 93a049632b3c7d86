package engine_test

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/engine"
	"github.com/keygate/keygate/internal/model"
)

// reference answers authz's questions through its general path only: the validity and grant rules, the
// Provider Admin body, and the full grant set, none of the fast bodies.
const reference = `package keygate.reference

import data.keygate.authz

default allow := false

allow if {
	authz._valid
	authz._granted
	not authz._free_blocked
}

allow if {
	data.keygate.db.provider_admins[authz._ok_user]
	authz._org_exists
	authz._key_id
	authz._resource_ok
}

default grants := []

grants := sort(authz._grant_set) if {
	authz._valid
	not authz._free_blocked
}

decision := {"allow": allow, "grants": grants, "reasons": authz.reasons, "user": authz._out_user, "org": authz._out_org, "key": authz._out_key}
`

// TestFastPathsMatchGeneralPath holds authz's fast bodies (rolesets[n].fast and open_grants, role set twins)
// to the general path: on the demo data, with a Provider Admin who also holds an org role, every subject
// (each user, unknown and deleted ones, each token alone and beside its user or another), org, key name,
// alias and id, and resource gets the same allow, grants and decision from both.
func TestFastPathsMatchGeneralPath(t *testing.T) {
	t.Parallel()
	snap, err := catalog.Demo()
	if err != nil {
		t.Fatal(err)
	}
	// u-peggy is a Provider Admin; give her an org role too, so her membership points at a twin.
	snap.Assignments = append(snap.Assignments, model.Assignment{User: "u-peggy", Role: "User", Org: "org-layer5"})
	m, err := catalog.Resolve(snap)
	if err != nil {
		t.Fatal(err)
	}
	out, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := engine.Read(out.Data, engine.Verification{})
	if err != nil {
		t.Fatal(err)
	}
	b.Modules = append(b.Modules, bundle.ModuleFile{Path: "reference.rego", URL: "reference.rego", Raw: []byte(reference)})
	eng, err := engine.New(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}

	subjects := []map[string]any{{"user": "u-nobody"}, {"token": "tok-nope"}, {"user": ""}}
	for _, u := range m.Users {
		subjects = append(subjects, map[string]any{"user": u.ID})
	}
	for _, tok := range m.Tokens {
		subjects = append(subjects, map[string]any{"token": tok.ID},
			map[string]any{"token": tok.ID, "user": tok.User}, map[string]any{"token": tok.ID, "user": "u-alice"})
	}
	orgs := []string{"org-nope"}
	for _, o := range m.Organizations {
		orgs = append(orgs, o.ID)
	}
	keys := []string{"No Such Key"}
	for name := range m.KeyNames {
		keys = append(keys, name)
	}
	resources := []any{nil, map[string]any{"type": "user", "id": "u-alice"}, map[string]any{"type": "team", "id": "t-nope"}}
	for _, o := range m.Organizations {
		resources = append(resources, map[string]any{"type": "organization", "id": o.ID})
	}
	for _, tm := range m.Teams {
		resources = append(resources, map[string]any{"type": "team", "id": tm.ID})
	}
	for _, ws := range m.Workspaces {
		resources = append(resources, map[string]any{"type": "workspace", "id": ws.ID})
	}
	for _, d := range m.Designs {
		resources = append(resources, map[string]any{"type": "design", "id": d.ID})
	}

	ctx := context.Background()
	eval := func(query string, in ast.Value) string {
		v, err := eng.EvalValue(ctx, query, in)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if v == nil {
			return "undefined"
		}
		return v.String()
	}
	n, allowed, fast, fastDenied := 0, 0, 0, 0
	for i, subj := range subjects {
		for _, org := range orgs {
			for j, key := range keys {
				for k, res := range resources {
					// Every key without a resource for known users in known orgs; resources, and unknown subjects
					// and orgs, on a rotating subset of keys, to bound the run.
					if res != nil && (i+j+k)%11 != 0 || (i < 3 || org == "org-nope") && (i+j)%5 != 0 {
						continue
					}
					input := map[string]any{"org": org, "key": key}
					for f, v := range subj {
						input[f] = v
					}
					if res != nil {
						input["resource"] = res
					}
					in, err := ast.InterfaceToValue(input)
					if err != nil {
						t.Fatal(err)
					}
					n++
					want := eval("data.keygate.reference.decision", in)
					got := eval(engine.AuthzDecision, in)
					if got != want {
						t.Fatalf("decision differs for %v:\n  fast    %s\n  general %s", input, got, want)
					}
					if a, ra := eval(engine.AuthzAllow, in), eval("data.keygate.reference.allow", in); a != ra {
						t.Fatalf("allow differs for %v: fast %s, general %s", input, a, ra)
					} else if a == "true" {
						allowed++
					}
					if g, rg := eval("data.keygate.authz.grants", in), eval("data.keygate.reference.grants", in); g != rg {
						t.Fatalf("grants differ for %v:\n  fast    %s\n  general %s", input, g, rg)
					}
					if subj["user"] != nil && subj["token"] == nil && res == nil && eval(`data.keygate.db.rolesets[data.keygate.db.orgs[input.org].members[input.user]].fast[input.key]`, in) != "undefined" {
						fast++
					}
					if eval("data.keygate.authz._fast_denied", in) == "true" {
						fastDenied++
					}
				}
			}
		}
	}
	// Inputs that are not exactly {user, org, key} (an explicit null resource, an unknown field) take the
	// general path and must still agree.
	for _, u := range m.Users {
		for _, key := range []string{"View All Teams", "Edit Organization", "Create Organization"} {
			for _, extra := range []map[string]any{{"resource": nil}, {"trace": true}} {
				input := map[string]any{"user": u.ID, "org": "org-layer5", "key": key}
				for f, v := range extra {
					input[f] = v
				}
				in, err := ast.InterfaceToValue(input)
				if err != nil {
					t.Fatal(err)
				}
				n++
				if got, want := eval(engine.AuthzDecision, in), eval("data.keygate.reference.decision", in); got != want {
					t.Fatalf("decision differs for %v:\n  fast    %s\n  general %s", input, got, want)
				}
			}
		}
	}
	t.Logf("%d inputs, %d allowed, %d through decision's fast path, %d through its fast denial", n, allowed, fast, fastDenied)
	if allowed < 1000 || fast < 500 || fastDenied < 500 {
		t.Fatalf("too few allowed (%d), fast-path (%d) or fast-denied (%d) inputs of %d: the comparison proves little",
			allowed, fast, fastDenied, n)
	}
}
