package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/keygate/keygate/internal/engine"
)

// TestHotFollowsCommits: Hot answers catalogue reads from its shared AST and user-sized reads from the store,
// and a commit to the store (a new bundle) drops the shared AST, so the next evaluation sees the new data.
func TestHotFollowsCommits(t *testing.T) {
	ctx := context.Background()
	data := func(keys map[string]any, member string) map[string]any {
		return map[string]any{"keygate": map[string]any{"db": map[string]any{
			"rolesets": map[string]any{"0": map[string]any{"fast": keys}},
			"orgs":     map[string]any{"o": map[string]any{"members": map[string]any{"u": member}}},
		}}}
	}
	store := inmem.NewFromObject(data(map[string]any{"Read": "k1"}, "0"))
	hot, err := engine.NewHot(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(rego.Store(store),
		rego.Query(`data.keygate.db.rolesets[data.keygate.db.orgs[input.org].members[input.user]].fast[input.key]`)).
		PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eval := func(key string) ast.Value {
		t.Helper()
		v, err := hot.Eval(ctx, &pq, ast.MustParseTerm(`{"org": "o", "user": "u", "key": "`+key+`"}`).Value, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := eval("Read"); v == nil || v.Compare(ast.String("k1")) != 0 {
		t.Fatalf("Read -> %v, want k1", v)
	}
	if v := eval("Write"); v != nil {
		t.Fatalf("Write -> %v, want undefined", v)
	}

	// A new revision: the role set now grants Write, not Read.
	err = storage.Txn(ctx, store, storage.WriteParams, func(txn storage.Transaction) error {
		return store.Write(ctx, txn, storage.ReplaceOp, storage.Path{"keygate"}, data(map[string]any{"Write": "k2"}, "0")["keygate"])
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := eval("Read"); v != nil {
		t.Fatalf("after the commit, Read -> %v, want undefined", v)
	}
	if v := eval("Write"); v == nil || v.Compare(ast.String("k2")) != 0 {
		t.Fatalf("after the commit, Write -> %v, want k2", v)
	}
}

// slowQuery is a Hot on an empty store and a query that runs for seconds unless cancelled.
func slowQuery(t *testing.T) (*engine.Hot, *rego.PreparedEvalQuery) {
	t.Helper()
	store := inmem.New()
	hot, err := engine.NewHot(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(rego.Store(store), rego.Query(`x := count([1 | some i in numbers.range(1, 100000000); i > 0])`)).
		PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return hot, &pq
}

// TestHotDeadline: an evaluation that outlives its timeout is cancelled with an error wrapping ErrDeadline.
func TestHotDeadline(t *testing.T) {
	hot, pq := slowQuery(t)
	start := time.Now()
	_, err := hot.Eval(context.Background(), pq, ast.NewObject(), 20*time.Millisecond)
	if err == nil || !errors.Is(err, engine.ErrDeadline) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancelled after %s", d)
	}
}

// TestHotContextDeadline: without a timeout, the context's deadline bounds the evaluation.
func TestHotContextDeadline(t *testing.T) {
	hot, pq := slowQuery(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := hot.Eval(ctx, pq, ast.NewObject(), 0); !errors.Is(err, engine.ErrDeadline) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if _, err := hot.Eval(ctx, pq, ast.NewObject(), 0); !errors.Is(err, engine.ErrDeadline) {
		t.Fatalf("after the deadline: err = %v, want a deadline error", err)
	}
}
