package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
)

// ErrDeadline is wrapped by Hot.Eval's error when its timeout cancelled the evaluation.
var ErrDeadline = context.DeadlineExceeded

// catalogueRoots are the parts of data.keygate.db whose size follows the catalogue (keys, roles, role sets,
// routes), not the number of users (docs/data-layout.md). Hot keeps them as AST values.
var catalogueRoots = []string{
	"collaborator_keys", "key_ids", "keychains", "keys", "provider_grants", "role_ids", "roles", "rolesets",
	"routes", "system_roles",
}

// Hot evaluates prepared queries against one store the way a per-request hot path should (the sidecar's
// Checks, the benchmarks):
//
//   - the deadline cancels OPA's evaluation through a timer, not through rego's goroutine per call;
//   - OPA's per-call metrics are not collected;
//   - rule results are cached in a short list per evaluation (flatCache), not OPA's trie of hash maps;
//   - the catalogue-sized parts of the data are converted to AST once per store commit and shared by every
//     evaluation, so reading a role set's grant paths converts nothing; user-sized parts are read from the
//     store as usual (one leaf per lookup) and not cached;
//   - the result stays an AST value.
//
// The shared AST is dropped by a trigger on every commit to the store and rebuilt on next use, and each
// evaluation takes it only after opening its read transaction: the store's commit waits for open read
// transactions, so an evaluation never mixes the shared AST of one commit with the data of another.
type Hot struct {
	store storage.Store
	cache atomic.Pointer[catalogueCache]
}

// NewHot prepares hot-path evaluation on store and registers the trigger that keeps it in step with commits.
func NewHot(ctx context.Context, store storage.Store) (*Hot, error) {
	h := &Hot{store: store}
	err := storage.Txn(ctx, store, storage.WriteParams, func(txn storage.Transaction) error {
		_, err := store.Register(ctx, txn, storage.TriggerConfig{
			OnCommit: func(context.Context, storage.Transaction, storage.TriggerEvent) { h.cache.Store(nil) },
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("watching the store: %w", err)
	}
	return h, nil
}

// Warm builds the shared AST now rather than on the first evaluation.
func (h *Hot) Warm(ctx context.Context) error {
	txn, err := h.store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer h.store.Abort(ctx, txn)
	_, err = h.catalogue(ctx, txn)
	return err
}

// Eval evaluates q on input within timeout. ctx is not watched (that would take a goroutine per call) except
// for its deadline, which applies when timeout <= 0; with neither there is no limit. An undefined result is
// (nil, nil).
func (h *Hot) Eval(ctx context.Context, q *rego.PreparedEvalQuery, input ast.Value, timeout time.Duration) (ast.Value, error) {
	if dl, ok := ctx.Deadline(); ok && timeout <= 0 {
		if timeout = time.Until(dl); timeout <= 0 {
			return nil, fmt.Errorf("%w before the evaluation", ErrDeadline)
		}
	}
	txn, err := h.store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer h.store.Abort(ctx, txn)
	cat, err := h.catalogue(ctx, txn)
	if err != nil {
		return nil, err
	}
	var cancel rego.EvalOption = evalNeverCancelled
	var d *deadline
	if timeout > 0 {
		d = deadlines.Get().(*deadline)
		d.arm(timeout)
		cancel = d.option
	}
	vc := flatCaches.Get().(*flatCache)
	rs, err := q.Eval(ctx, rego.EvalParsedInput(input), rego.EvalTransaction(txn), cancel,
		evalNoMetrics, cat.option, vc.option, evalKeepAST)
	vc.reset()
	flatCaches.Put(vc)
	if d != nil {
		fired := !d.timer.Stop()
		if fired && err != nil {
			return nil, fmt.Errorf("%w: %w", ErrDeadline, err)
		}
		if !fired {
			d.cancelled.Store(false)
			deadlines.Put(d) // a deadline whose timer fired may still be running it: never reused
		}
	}
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	v, ok := rs[0].Expressions[0].Value.(ast.Value)
	if !ok {
		return nil, fmt.Errorf("unexpected result %T", rs[0].Expressions[0].Value)
	}
	return v, nil
}

// catalogue returns the shared AST of the store's current commit, building it when a commit dropped it.
// txn must be open: no commit can happen while it is.
func (h *Hot) catalogue(ctx context.Context, txn storage.Transaction) (*catalogueCache, error) {
	if c := h.cache.Load(); c != nil {
		return c, nil
	}
	c := &catalogueCache{roots: map[string]ast.Value{}}
	c.option = rego.EvalBaseCache(c)
	for _, name := range catalogueRoots {
		v, err := h.store.Read(ctx, txn, storage.Path{"keygate", "db", name})
		if storage.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading data.keygate.db.%s: %w", name, err)
		}
		if av, ok := v.(ast.Value); ok {
			c.roots[name] = av
			continue
		}
		av, err := ast.InterfaceToValue(v)
		if err != nil {
			return nil, fmt.Errorf("converting data.keygate.db.%s: %w", name, err)
		}
		c.roots[name] = av
	}
	h.cache.CompareAndSwap(nil, c)
	return c, nil
}

// catalogueCache is a topdown.BaseCache that answers reads under the catalogue roots from their AST and
// leaves every other read to the store. It is immutable once built.
type catalogueCache struct {
	roots  map[string]ast.Value
	option rego.EvalOption // rego.EvalBaseCache(c), made once
}

var (
	termKeygate = ast.StringTerm("keygate")
	termDB      = ast.StringTerm("db")
)

func (c *catalogueCache) Get(ref ast.Ref) ast.Value {
	if len(ref) < 4 || !ref[0].Equal(ast.DefaultRootDocument) || !ref[1].Equal(termKeygate) || !ref[2].Equal(termDB) {
		return nil
	}
	name, ok := ref[3].Value.(ast.String)
	if !ok {
		return nil
	}
	root := c.roots[string(name)]
	if root == nil || len(ref) == 4 {
		return root
	}
	v, err := root.Find(ref[4:])
	if err != nil {
		return nil
	}
	return v
}

// Put keeps nothing: catalogue reads are answered by Get, and user-sized reads are one store lookup each.
func (c *catalogueCache) Put(ast.Ref, ast.Value) {}

// deadline cancels an evaluation when its timer fires. Unlike topdown.NewCancel's, it is reused (with its
// timer and its rego option) by later evaluations when the timer did not fire.
type deadline struct {
	cancelled atomic.Bool
	timer     *time.Timer
	option    rego.EvalOption // rego.EvalExternalCancel(d)
}

var deadlines = sync.Pool{New: func() any {
	d := &deadline{}
	d.timer = time.AfterFunc(time.Hour, d.Cancel)
	d.timer.Stop()
	d.option = rego.EvalExternalCancel(d)
	return d
}}

func (d *deadline) arm(timeout time.Duration) { d.timer.Reset(timeout) }

func (d *deadline) Cancel() { d.cancelled.Store(true) }

func (d *deadline) Cancelled() bool { return d.cancelled.Load() }

// neverCancelled is the cancellation of an evaluation without a timeout (rego would otherwise start a
// goroutine per call to watch the context).
type neverCancelled struct{}

func (neverCancelled) Cancel()         {}
func (neverCancelled) Cancelled() bool { return false }

// keepAST leaves a result as OPA computed it.
func keepAST(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }

// Options every hot evaluation shares: OPA's per-call metrics are not collected; results stay AST values.
var (
	evalNoMetrics      = rego.EvalMetrics(opametrics.NoOp())
	evalNeverCancelled = rego.EvalExternalCancel(neverCancelled{})
	evalKeepAST        = rego.EvalGenerateJSON(keepAST)
)

// flatCache is a topdown.VirtualCache (rule results within one evaluation) kept as a short list per frame:
// an evaluation caches a handful of rules, which a list finds faster than OPA's trie of hash maps allocates.
type flatCache struct {
	frames [][]cacheEntry
	option rego.EvalOption // rego.EvalVirtualCache(c), made once
}

type cacheEntry struct {
	ref   ast.Ref
	value *ast.Term // nil: undefined
}

// flatCaches recycles the caches: one lives for one evaluation.
var flatCaches = sync.Pool{New: func() any {
	c := &flatCache{frames: [][]cacheEntry{make([]cacheEntry, 0, 16)}}
	c.option = rego.EvalVirtualCache(c)
	return c
}}

// reset empties the cache for its next evaluation, dropping the references it held.
func (c *flatCache) reset() {
	clear(c.frames[0])
	c.frames[0] = c.frames[0][:0]
	for i := 1; i < len(c.frames); i++ {
		c.frames[i] = nil
	}
	c.frames = c.frames[:1]
}

func (c *flatCache) Push() { c.frames = append(c.frames, nil) }

func (c *flatCache) Pop() { c.frames = c.frames[:len(c.frames)-1] }

func (c *flatCache) Get(ref ast.Ref) (*ast.Term, bool) {
	for _, e := range c.frames[len(c.frames)-1] {
		if e.ref.Equal(ref) {
			return e.value, e.value == nil
		}
	}
	return nil, false
}

func (c *flatCache) Put(ref ast.Ref, value *ast.Term) {
	top := len(c.frames) - 1
	for i, e := range c.frames[top] {
		if e.ref.Equal(ref) {
			c.frames[top][i].value = value
			return
		}
	}
	// The evaluator reuses the ref's backing array: keep a copy of the slice (its terms are not changed).
	c.frames[top] = append(c.frames[top], cacheEntry{ref: slices.Clone(ref), value: value})
}

func (c *flatCache) Keys() []ast.Ref {
	var out []ast.Ref
	for _, e := range c.frames[len(c.frames)-1] {
		if e.value != nil {
			out = append(out, e.ref)
		}
	}
	return out
}
