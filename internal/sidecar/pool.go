package sidecar

import (
	"context"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	kgengine "github.com/keygate/keygate/internal/engine"
)

// pool evaluates prepared queries on a fixed set of long-lived goroutines: OPA's evaluator grows deep
// stacks, which a fresh goroutine per gRPC stream would pay for again and again.
type pool struct {
	jobs chan *job
	wg   sync.WaitGroup
	free sync.Pool
}

type job struct {
	ctx     context.Context
	hot     *kgengine.Hot
	query   *rego.PreparedEvalQuery
	input   ast.Value
	timeout time.Duration
	result  ast.Value
	err     error
	done    chan struct{}
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
			j.result, j.err = j.hot.Eval(j.ctx, j.query, j.input, j.timeout)
		}
		j.done <- struct{}{}
	}
}

// eval runs q on input through hot on a worker, giving up when ctx ends (the worker then finishes on its own,
// within timeout).
func (p *pool) eval(ctx context.Context, hot *kgengine.Hot, q *rego.PreparedEvalQuery, input ast.Value, timeout time.Duration) (ast.Value, error) {
	j := p.free.Get().(*job)
	j.ctx, j.hot, j.query, j.input, j.timeout = ctx, hot, q, input, timeout
	select {
	case p.jobs <- j:
	case <-ctx.Done():
		j.ctx, j.hot, j.query, j.input = nil, nil, nil, nil
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
