package engine_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/engine"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/synth"
)

// Scale benchmarks: KEYGATE_BENCH_USERS (default "100000,1000000") synthetic users, 2 orgs and 2-3 roles
// each. `make bench` runs them; docs/performance.md records the figures.

func benchSizes() []int { return synth.BenchSizes("100000,1000000") }

type scale struct {
	snap   model.Snapshot
	bundle *compiler.Bundle
	eng    *engine.Engine
	heap   uint64 // bytes held by the loaded data and compiled policies
	load   time.Duration
}

var scales sync.Map // "[name/]users" -> *scale

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func getScale(b *testing.B, users int) *scale {
	if s, ok := scales.Load(fmt.Sprint(users)); ok {
		return s.(*scale)
	}
	return loadScale(b, "", synth.Generate(synth.Config{Users: users}))
}

// loadScale builds and loads snap once per (name, number of users).
func loadScale(b *testing.B, name string, snap model.Snapshot) *scale {
	id := strings.TrimPrefix(name+"/"+fmt.Sprint(len(snap.Users)), "/")
	if s, ok := scales.Load(id); ok {
		return s.(*scale)
	}
	m, err := catalog.Resolve(snap)
	if err != nil {
		b.Fatal(err)
	}
	out, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		b.Fatal(err)
	}
	m = nil
	s := &scale{snap: snap, bundle: out}
	before := heapInUse()
	start := time.Now()
	bun, err := engine.Read(out.Data, engine.Verification{})
	if err != nil {
		b.Fatal(err)
	}
	eng, err := engine.New(context.Background(), bun)
	if err != nil {
		b.Fatal(err)
	}
	bun = nil
	s.load = time.Since(start)
	s.eng = eng
	s.heap = heapInUse() - before
	scales.Store(id, s)
	return s
}

// BenchmarkBuild measures snapshot -> validated model -> bundle bytes.
func BenchmarkBuild(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			snap := synth.Generate(synth.Config{Users: n})
			b.ResetTimer()
			var out *compiler.Bundle
			for range b.N {
				m, err := catalog.Resolve(snap)
				if err != nil {
					b.Fatal(err)
				}
				if out, err = compiler.Build(m, compiler.Options{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(out.Data))/(1<<20), "bundle-MiB")
			b.ReportMetric(float64(out.DataSize)/(1<<20), "data-MiB")
		})
	}
}

// BenchmarkLoadedHeap reports the heap the loaded bundle holds in OPA (data store + compiled policies).
func BenchmarkLoadedHeap(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			s := getScale(b, n)
			for range b.N {
			}
			b.ReportMetric(float64(s.heap)/(1<<20), "heap-MiB")
			b.ReportMetric(s.load.Seconds(), "load-s")
		})
	}
}

// BenchmarkDecision measures one prepared data.keygate.authz.decision / allow evaluation, with p50/p99.
func BenchmarkDecision(b *testing.B) {
	for _, n := range benchSizes() {
		for _, q := range []string{engine.AuthzAllow, engine.AuthzDecision, engine.AssignDecision} {
			for _, mix := range []string{"granted", "mixed"} {
				if q == engine.AssignDecision && mix == "granted" {
					continue
				}
				name := strings.TrimPrefix(q, "data.keygate.") + "/" + mix
				b.Run(fmt.Sprintf("users=%d/%s", n, name), func(b *testing.B) {
					s := getScale(b, n)
					pq, _ := s.eng.Prepared(q)
					inputs := benchInputs(s.snap, q, mix, 1024)
					ctx := context.Background()
					lat := make([]time.Duration, 0, b.N)
					allowed := 0
					b.ReportAllocs()
					b.ResetTimer()
					for i := range b.N {
						start := time.Now()
						v, err := s.eng.Hot().Eval(ctx, &pq, inputs[i%len(inputs)], time.Second)
						lat = append(lat, time.Since(start))
						if err != nil || v == nil {
							b.Fatalf("eval: %v (%v)", err, v)
						}
						if isAllowedValue(v) {
							allowed++
						}
					}
					b.StopTimer()
					slices.Sort(lat)
					b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-us")
					b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-us")
					if allowed == 0 {
						b.Fatal("no input was allowed: the benchmark measures only the deny path")
					}
					b.ReportMetric(float64(allowed)/float64(b.N), "allowed-ratio")
				})
			}
		}
	}
}

func isAllowedValue(v ast.Value) bool {
	if b, ok := v.(ast.Boolean); ok {
		return bool(b)
	}
	o, ok := v.(ast.Object)
	if !ok {
		return false
	}
	allow := o.Get(ast.InternedTerm("allow"))
	return allow != nil && allow.Value.Compare(ast.Boolean(true)) == 0
}

func isAllowed(v any) bool {
	if ok, isBool := v.(bool); isBool {
		return ok
	}
	m, _ := v.(map[string]any)
	return m["allow"] == true
}

// benchInputs picks users with an org they hold roles in. "granted": a key every member holds (View All
// Teams); "mixed": keys alternate between granted and not granted (owner-only Delete Organization, Edit
// Organization which only admins hold). Inputs are parsed once, as the sidecar passes them.
func benchInputs(s model.Snapshot, q, mix string, n int) []ast.Value {
	keys := []string{"View All Teams", "Delete Organization", "Edit Organization", "View Workspace"}
	if mix == "granted" {
		keys = []string{"View All Teams"}
	}
	var out []ast.Value
	add := func(m map[string]any) {
		v, err := ast.InterfaceToValue(m)
		if err != nil {
			panic(err)
		}
		out = append(out, v)
	}
	for i := range n {
		a := s.Assignments[(i*7919)%len(s.Assignments)]
		if a.Org == "" {
			a = s.Assignments[0]
		}
		if q == engine.AssignDecision {
			add(map[string]any{"actor": a.User, "action": "assign", "role": "User", "user": s.Users[(i*31)%len(s.Users)].ID, "org": a.Org})
			continue
		}
		add(map[string]any{"user": a.User, "org": a.Org, "key": keys[i%len(keys)]})
	}
	return out
}
