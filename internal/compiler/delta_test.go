package compiler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/model"
)

// applyDelta activates the delta bundle with OPA's own bundle activation on a store holding old at
// data.keygate.db and returns the document it leaves there, as JSON.
func applyDelta(t *testing.T, old, delta []byte) []byte {
	t.Helper()
	b, err := bundle.NewReader(bytes.NewReader(delta)).Read()
	if err != nil {
		t.Fatalf("OPA does not read the delta bundle: %v", err)
	}
	if b.Type() != bundle.DeltaBundleType {
		t.Fatalf("bundle type %q, want delta", b.Type())
	}
	var doc any
	if err := util.UnmarshalJSON(old, &doc); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store := inmem.NewFromObject(map[string]any{compiler.Root: map[string]any{"db": doc}})
	txn := storage.NewTransactionOrDie(ctx, store, storage.WriteParams)
	err = bundle.Activate(&bundle.ActivateOpts{Ctx: ctx, Store: store, Txn: txn, Compiler: ast.NewCompiler(),
		Metrics: metrics.New(), Bundles: map[string]*bundle.Bundle{compiler.Root: &b}})
	if err != nil {
		t.Fatalf("OPA does not activate the delta: %v", err)
	}
	got, err := store.Read(ctx, txn, storage.MustParsePath(compiler.DataPath))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Commit(ctx, txn); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// opPaths lists the operations as "op path; ...".
func opPaths(ops []bundle.PatchOperation) string {
	var s []string
	for _, o := range ops {
		s = append(s, o.Op+" "+o.Path)
	}
	return strings.Join(s, "; ")
}

func sameJSON(t *testing.T, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := util.UnmarshalJSON(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := util.UnmarshalJSON(want, &w); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(g, w)
}

// checkDelta diffs old -> new, writes the delta bundle and applies it with OPA: the result must be new.
func checkDelta(t *testing.T, old, new []byte) []bundle.PatchOperation {
	t.Helper()
	ops, err := compiler.Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	delta, err := compiler.DeltaBundle("2-ab", ops, new)
	if err != nil {
		t.Fatal(err)
	}
	if got := applyDelta(t, old, delta); !sameJSON(t, got, new) {
		t.Fatalf("applying %d op(s) gives\n%s\nwant\n%s\nops: %s", len(ops), got, new, opPaths(ops))
	}
	return ops
}

func demoData(t *testing.T, edit func(*model.Snapshot)) []byte {
	t.Helper()
	snap, err := catalog.DemoWithRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&snap)
	}
	m, err := catalog.Resolve(snap)
	if err != nil {
		t.Fatal(err)
	}
	return compiler.Data(m)
}

// TestDeltaAppliesToTheDemo changes the demo data the ways the source changes and checks that OPA's
// activation of the delta gives the new document exactly, with a patch that stays small.
func TestDeltaAppliesToTheDemo(t *testing.T) {
	t.Parallel()
	old := demoData(t, nil)
	for _, tc := range []struct {
		name   string
		edit   func(*model.Snapshot)
		maxOps int
	}{
		{"unchanged", func(*model.Snapshot) {}, 0},
		{"one assignment changes role", func(s *model.Snapshot) {
			for i, a := range s.Assignments {
				if a.User == "u-frank" && a.Role == "User" {
					s.Assignments[i].Role = "Organization Billing Manager"
				}
			}
		}, 6},
		{"an assignment is removed", func(s *model.Snapshot) {
			for i, a := range s.Assignments {
				if a.User == "u-dave" && a.Role == "Team Admin" {
					s.Assignments = append(s.Assignments[:i], s.Assignments[i+1:]...)
					break
				}
			}
		}, 8},
		{"a user is deleted", func(s *model.Snapshot) {
			for i := range s.Users {
				if s.Users[i].ID == "u-frank" {
					s.Users[i].Deleted = true
				}
			}
		}, 8},
		{"a token is revoked", func(s *model.Snapshot) { s.Tokens[0].Revoked = true }, 1},
		{"an organization is added", func(s *model.Snapshot) {
			s.Organizations = append(s.Organizations, model.Organization{ID: "org-new/~1%", Name: "N", Owner: "u-alice"})
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ops := checkDelta(t, old, demoData(t, tc.edit))
			if len(ops) > tc.maxOps {
				t.Errorf("%d operations, want at most %d: %s", len(ops), tc.maxOps, opPaths(ops))
			}
		})
	}
}

// TestDeltaPaths covers keys that need escaping, type changes, arrays and whole-object replacement.
func TestDeltaPaths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		old, new string
		ops      string // the expected operations, "op path" joined by "; " ("" = not checked)
	}{
		{"equal", `{"a":{"b":1}}`, `{"a":{"b":1}}`, ""},
		{"scalar change", `{"a":{"b":1,"c":2}}`, `{"a":{"b":1,"c":3}}`, "upsert /keygate/db/a/c"},
		{"add and remove", `{"a":{"b":1,"c":2,"e":{"long":"a longer value that is kept as it was"}}}`,
			`{"a":{"b":1,"d":2,"e":{"long":"a longer value that is kept as it was"}}}`,
			"remove /keygate/db/a/c; upsert /keygate/db/a/d"},
		{"slash and tilde keys", `{"a/b":{"~1":1,"x":0},"m":{"k":1}}`, `{"a/b":{"~1":2,"x":0},"m":{"k":1}}`,
			"upsert /keygate/db/a~1b/~01"},
		{"percent and space keys", `{"%2F x":{"k":1,"j":0}}`, `{"%2F x":{"k":2,"j":0}}`, "upsert /keygate/db/%252F%20x/k"},
		{"escaped key in the JSON", `{"q\"\\u00e9":{"k":1,"j":0}}`, `{"q\"\u00e9":{"k":2,"j":0}}`, ""},
		{"empty key", `{"a":{"":1,"b":2,"c":3,"d":4}}`, `{"a":{"":2,"b":2,"c":3,"d":4}}`, "upsert /keygate/db/a"},
		{"empty key removed", `{"a":{"":1,"b":2}}`, `{"a":{"b":2}}`, ""},
		{"array changes whole", `{"a":{"l":[1,2,3],"z":0}}`, `{"a":{"l":[1,3],"z":0}}`, "upsert /keygate/db/a/l"},
		{"object becomes scalar", `{"a":{"b":{"c":1}}}`, `{"a":{"b":"c"}}`, "upsert /keygate/db/a/b"},
		{"scalar becomes object", `{"a":{"b":"c"}}`, `{"a":{"b":{"c":1}}}`, "upsert /keygate/db/a/b"},
		{"everything changes: one upsert", `{"a":{"b":1,"c":2}}`, `{"a":{"b":3,"c":4}}`, "upsert /keygate/db/a"},
		{"new top-level member", `{"a":1}`, `{"a":1,"b":{"c":[{"d":null}]}}`, "upsert /keygate/db/b"},
		{"empty objects", `{}`, `{"a":{}}`, "upsert /keygate/db/a"},
		{"unsorted input", `{"b":{"y":1,"x":1},"a":1}`, `{"a":1,"b":{"x":1,"y":2}}`, "upsert /keygate/db/b/y"},
		{"whitespace", " {\n \"a\" : { \"b\" : 1 , \"c\" : 2 } }\n", `{"a":{"b":1,"c":5}}`, "upsert /keygate/db/a/c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ops := checkDelta(t, []byte(tc.old), []byte(tc.new))
			if tc.ops == "" {
				return
			}
			if got := opPaths(ops); got != tc.ops {
				t.Errorf("ops %q, want %q", got, tc.ops)
			}
		})
	}
}

// TestDeltaRandomDocuments diffs random nested documents that differ in random places.
func TestDeltaRandomDocuments(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	keys := []string{"a", "b", "c/d", "~", "%", " ", "é", "x.y", "0", "1"}
	var gen func(depth int) any
	gen = func(depth int) any {
		switch n := r.IntN(10); {
		case depth > 3 || n < 3:
			return []any{"s", 1.5, true, nil}[r.IntN(4)]
		case n < 4:
			return []any{"l", float64(r.IntN(3))}
		default:
			o := map[string]any{}
			for range r.IntN(5) {
				o[keys[r.IntN(len(keys))]] = gen(depth + 1)
			}
			return o
		}
	}
	var mutate func(v any) any
	mutate = func(v any) any {
		o, ok := v.(map[string]any)
		if !ok || r.IntN(4) == 0 {
			return gen(2)
		}
		c := map[string]any{}
		for k, x := range o {
			switch r.IntN(6) {
			case 0: // removed
			case 1:
				c[k] = mutate(x)
			default:
				c[k] = x
			}
		}
		if r.IntN(3) == 0 {
			c[keys[r.IntN(len(keys))]+strconv.Itoa(r.IntN(2))] = gen(2)
		}
		return c
	}
	for i := range 200 {
		root := map[string]any{}
		for _, k := range keys {
			root[k] = gen(0)
		}
		next := mutate(root)
		if _, ok := next.(map[string]any); !ok {
			next = map[string]any{"only": next}
		}
		old, _ := json.Marshal(root)
		new, _ := json.Marshal(next)
		t.Run(strconv.Itoa(i), func(t *testing.T) { checkDelta(t, old, new) })
	}
}

func TestDiffRejectsBadJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ old, new string }{
		{`{"a":1}`, `{"a":}`},
		{`{"a":1}`, `{"a":1`},
		{`{"a":{"b":1}}`, `{"a":{"b":"x}}`},
		{`{"a":{"b":1}}`, `{"a":{"b":tru}}`},
		{`{"a":1}`, `{"a":1} x`},
	} {
		if ops, err := compiler.Diff([]byte(tc.old), []byte(tc.new)); err == nil {
			t.Errorf("Diff(%s, %s) = %+v, want an error", tc.old, tc.new, ops)
		}
	}
}

// TestDeltaBundleIsDeterministic: the same documents give the same bytes.
func TestDeltaBundleIsDeterministic(t *testing.T) {
	t.Parallel()
	old, new := demoData(t, nil), demoData(t, func(s *model.Snapshot) { s.Tokens[0].Revoked = true })
	var first []byte
	for range 3 {
		ops, err := compiler.Diff(old, new)
		if err != nil {
			t.Fatal(err)
		}
		b, err := compiler.DeltaBundle("7-ab", ops, new)
		if err != nil {
			t.Fatal(err)
		}
		if first != nil && !bytes.Equal(b, first) {
			t.Fatal("two delta bundles of the same documents differ")
		}
		first = b
	}
}
