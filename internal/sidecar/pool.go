package sidecar

import (
	"context"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// pool evaluates prepared queries on a fixed set of long-lived goroutines: OPA's evaluator grows deep
// stacks, which a fresh goroutine per gRPC stream would pay for again and again.
type pool struct {
	jobs chan *job
	wg   sync.WaitGroup
	free sync.Pool
}

type job struct {
	ctx   context.Context
	query *rego.PreparedEvalQuery
	input ast.Value
	rs    rego.ResultSet
	err   error
	done  chan struct{}
}

func newPool(workers int) *pool {
	p := &pool{jobs: make(chan *job, workers*4)}
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
			j.rs, j.err = j.query.Eval(j.ctx, rego.EvalParsedInput(j.input))
		}
		j.done <- struct{}{}
	}
}

// eval runs q on input on a worker, giving up when ctx ends (the worker then finishes on its own).
func (p *pool) eval(ctx context.Context, q *rego.PreparedEvalQuery, input ast.Value) (rego.ResultSet, error) {
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
		rs, err := j.rs, j.err
		*j = job{done: j.done}
		p.free.Put(j)
		return rs, err
	case <-ctx.Done():
		return nil, ctx.Err() // j is abandoned to the worker and the garbage collector
	}
}

// close stops the workers once queued jobs are done. No eval may follow.
func (p *pool) close() {
	close(p.jobs)
	p.wg.Wait()
}
