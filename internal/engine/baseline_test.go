package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/engine"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// BenchmarkOPABaseline is the floor of one prepared OPA evaluation on this machine: a query of one data lookup.
func BenchmarkOPABaseline(b *testing.B) {
	store := inmem.NewFromObject(map[string]any{"db": map[string]any{"orgs": map[string]any{"o1": map[string]any{"owner": "u1"}}}})
	pq, err := rego.New(rego.Query("data.db.orgs[input.org].owner"), rego.Store(store)).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	in := ast.MustParseTerm(`{"org": "o1", "user": "u1", "key": "k"}`).Value
	b.ReportAllocs()
	for b.Loop() {
		rs, err := pq.Eval(context.Background(), rego.EvalParsedInput(in))
		if err != nil || len(rs) != 1 {
			b.Fatal(err)
		}
	}
}

// BenchmarkOPABaselineLean is the same lookup evaluated as the hot paths do (engine.EvalLean).
func BenchmarkOPABaselineLean(b *testing.B) {
	store := inmem.NewFromObject(map[string]any{"db": map[string]any{"orgs": map[string]any{"o1": map[string]any{"owner": "u1"}}}})
	pq, err := rego.New(rego.Query("data.db.orgs[input.org].owner"), rego.Store(store)).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	hot, err := engine.NewHot(context.Background(), store)
	if err != nil {
		b.Fatal(err)
	}
	in := ast.MustParseTerm(`{"org": "o1", "user": "u1", "key": "k"}`).Value
	b.ReportAllocs()
	for b.Loop() {
		v, err := hot.Eval(context.Background(), &pq, in, time.Second)
		if err != nil || v == nil {
			b.Fatal(err)
		}
	}
}
