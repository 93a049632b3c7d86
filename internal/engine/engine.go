// Package engine loads a keygate bundle into OPA (v1 Go packages) and evaluates its decisions with prepared
// queries. It is what `keygate check` and the tests use to ask a bundle exactly what a stock opa would answer.
package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// Decision paths (contract section 4).
const (
	AuthzDecision  = "data.keygate.authz.decision"
	AuthzAllow     = "data.keygate.authz.allow"
	AuthzKeys      = "data.keygate.authz.keys"
	AssignDecision = "data.keygate.assign.decision"
	Assignable     = "data.keygate.assign.assignable"
	EnvoyResponse  = "data.keygate.envoy.response"
)

// Verification configures signature checking of a bundle. Zero value: unsigned bundles accepted.
type Verification struct {
	// Key is the public key (PEM) or HMAC secret; empty disables verification.
	Key []byte
	// KeyID is the key's id in the signature (default "keygate"); Alg its algorithm (default RS256).
	KeyID, Alg string
}

// Read parses a bundle (.tar.gz), verifying its signature when v has a key. A bundle without signature is
// rejected when a key is configured.
func Read(data []byte, v Verification) (*bundle.Bundle, error) {
	r := bundle.NewCustomReader(bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(data), ""))
	if len(v.Key) > 0 {
		id := v.KeyID
		if id == "" {
			id = "keygate"
		}
		alg := v.Alg
		if alg == "" {
			alg = "RS256"
		}
		keys := map[string]*bundle.KeyConfig{id: {Key: string(v.Key), Algorithm: alg}}
		r = r.WithBundleVerificationConfig(bundle.NewVerificationConfig(keys, id, "", nil))
	}
	b, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("reading bundle: %w", err)
	}
	return &b, nil
}

// Engine answers queries against one loaded bundle. It is safe for concurrent use.
type Engine struct {
	Revision string
	store    storage.Store
	hot      *Hot
	compiler *ast.Compiler
	prepared map[string]rego.PreparedEvalQuery
}

// New loads a bundle into a fresh store and compiles its policies.
func New(ctx context.Context, b *bundle.Bundle) (*Engine, error) {
	if b.Data == nil {
		return nil, errors.New("bundle has no data document")
	}
	modules := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		parsed := m.Parsed
		if parsed == nil {
			var err error
			if parsed, err = ast.ParseModuleWithOpts(m.Path, string(m.Raw), ast.ParserOptions{RegoVersion: ast.RegoV1}); err != nil {
				return nil, fmt.Errorf("parsing %s: %w", m.Path, err)
			}
		}
		modules[m.Path] = parsed
	}
	c := ast.NewCompiler().WithEnablePrintStatements(false)
	if c.Compile(modules); c.Failed() {
		return nil, fmt.Errorf("compiling policies: %w", c.Errors)
	}
	e := &Engine{
		Revision: b.Manifest.Revision,
		store:    inmem.NewFromObjectWithOpts(b.Data, inmem.OptRoundTripOnWrite(false)),
		compiler: c,
		prepared: map[string]rego.PreparedEvalQuery{},
	}
	var err error
	if e.hot, err = NewHot(ctx, e.store); err != nil {
		return nil, err
	}
	if err := e.hot.Warm(ctx); err != nil {
		return nil, err
	}
	for _, q := range []string{AuthzDecision, AuthzAllow, AuthzKeys, AssignDecision, Assignable, EnvoyResponse} {
		pq, err := e.prepare(ctx, q)
		if err != nil {
			return nil, err
		}
		e.prepared[q] = pq
	}
	return e, nil
}

func (e *Engine) prepare(ctx context.Context, query string) (rego.PreparedEvalQuery, error) {
	pq, err := rego.New(rego.Query(query), rego.Compiler(e.compiler), rego.Store(e.store)).PrepareForEval(ctx)
	if err != nil {
		return pq, fmt.Errorf("preparing %s: %w", query, err)
	}
	return pq, nil
}

// Eval evaluates a query (a data path such as data.keygate.authz.decision) with an input, the way the hot
// paths do (Hot), and returns the result as Go values (maps, slices, json.Number...). An undefined result is
// (nil, false, nil).
func (e *Engine) Eval(ctx context.Context, query string, input any) (any, bool, error) {
	in, err := ast.InterfaceToValue(input)
	if err != nil {
		return nil, false, fmt.Errorf("input: %w", err)
	}
	v, err := e.EvalValue(ctx, query, in)
	if err != nil || v == nil {
		return nil, false, err
	}
	out, err := ast.JSON(v)
	if err != nil {
		return nil, false, fmt.Errorf("evaluating %s: %w", query, err)
	}
	return out, true, nil
}

// EvalValue evaluates a query on a parsed input through Hot, leaving the result an AST value (nil when
// undefined).
func (e *Engine) EvalValue(ctx context.Context, query string, input ast.Value) (ast.Value, error) {
	pq, ok := e.prepared[query]
	if !ok {
		var err error
		if pq, err = e.prepare(ctx, query); err != nil {
			return nil, err
		}
	}
	v, err := e.hot.Eval(ctx, &pq, input, 0)
	if err != nil {
		return nil, fmt.Errorf("evaluating %s: %w", query, err)
	}
	return v, nil
}

// Prepared returns the prepared query for one of the decision paths (for benchmarks and hot paths).
func (e *Engine) Prepared(query string) (rego.PreparedEvalQuery, bool) {
	pq, ok := e.prepared[query]
	return pq, ok
}

// Hot returns the engine's hot-path evaluator.
func (e *Engine) Hot() *Hot { return e.hot }
