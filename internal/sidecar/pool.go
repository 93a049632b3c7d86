package sidecar

import (
	"context"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	kgengine "github.com/keygate/keygate/internal/engine"
)

// pool evaluates prepared queries through hot on a fixed set of long-lived goroutines: OPA's evaluator grows
// deep stacks, which a fresh goroutine per gRPC stream would pay for again and again.
type pool struct {
	hot  *kgengine.Hot
	jobs chan *job
	wg   sync.WaitGroup
	free sync.Pool
}

type job struct {
	ctx    context.Context
	query  *rego.PreparedEvalQuery
	input  ast.Value
	result ast.Value
	err    error
	done   chan struct{}
}

func newPool(workers int, hot *kgengine.Hot) *pool {
	p := &pool{hot: hot, jobs: make(chan *job, workers*4)}
	p.free.New = func() any { return &job{done: make(chan struct{}, 1)} }
	p.wg.Add(workers)
	for range workers {
		go p.work()
	}
	return p
}

func (p *pool) work() {
	defer p.wg.Done()
	for j := range p.jobs {
		if err := j.ctx.Err(); err != nil {
			j.err = err
		} else {
			j.result, j.err = p.hot.Eval(j.ctx, j.query, j.input, 0) // within ctx's deadline
		}
		j.done <- struct{}{}
	}
}

// eval runs q on input on a worker, giving up when ctx ends. ctx must have a deadline: the evaluation ends
// by it (a job given up on is finished by its worker, within that deadline).
func (p *pool) eval(ctx context.Context, q *rego.PreparedEvalQuery, input ast.Value) (ast.Value, error) {
	j := p.free.Get().(*job)
	j.ctx, j.query, j.input = ctx, q, input
	select {
	case p.jobs <- j:
	case <-ctx.Done():
		j.ctx, j.query, j.input = nil, nil, nil
		p.free.Put(j)
		return nil, ctx.Err()
	}
	select {
	case <-j.done:
		v, err := j.result, j.err
		*j = job{done: j.done}
		p.free.Put(j)
		return v, err
	case <-ctx.Done():
		return nil, ctx.Err() // j is abandoned to the worker and the garbage collector
	}
}

// close stops the workers once queued jobs are done. No eval may follow.
func (p *pool) close() {
	close(p.jobs)
	p.wg.Wait()
}
