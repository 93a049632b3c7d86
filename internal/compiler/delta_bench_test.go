package compiler_test

import (
	"fmt"
	"testing"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/synth"
)

func deltaBenchSizes() []int { return synth.BenchSizes("100000") }

func buildSnap(b *testing.B, snap model.Snapshot) *compiler.Bundle {
	b.Helper()
	m, err := catalog.Resolve(snap)
	if err != nil {
		b.Fatal(err)
	}
	out, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkDelta measures the delta bundle of one change on synthetic data (KEYGATE_BENCH_USERS, default
// 100000): its size beside the snapshot's, and the time to diff the two data documents and write it.
//
//	KEYGATE_BENCH_USERS=100000,1000000 go test ./internal/compiler -run '^$' -bench Delta -benchtime 5x
func BenchmarkDelta(b *testing.B) {
	for _, n := range deltaBenchSizes() {
		base := synth.Generate(synth.Config{Users: n})
		before := buildSnap(b, base)
		// User 1001 (not an org owner) holds User + Organization Billing Manager in its home org.
		u := synth.UserID(1001)
		changes := []struct {
			name string
			edit func(*model.Snapshot)
		}{
			{"role_change", func(s *model.Snapshot) { // Billing Manager -> Organization Admin: both sets exist
				for i, a := range s.Assignments {
					if a.User == u && a.Role == model.RoleBillingManager {
						s.Assignments[i].Role = model.RoleOrganizationAdmin
					}
				}
			}},
			{"new_assignment", func(s *model.Snapshot) { // a Workspace Manager role: a role set no one held
				s.Assignments = append(s.Assignments, model.Assignment{User: u, Role: model.RoleWorkspaceManager,
					Org: s.Workspaces[1].Org, Workspace: s.Workspaces[1].ID})
			}},
			{"token_revoked", func(s *model.Snapshot) { s.Tokens[1].Revoked = true }},
		}
		for _, c := range changes {
			snap := model.Merge(model.Snapshot{}, base)
			snap.Assignments = append([]model.Assignment(nil), base.Assignments...)
			snap.Tokens = append([]model.Token(nil), base.Tokens...)
			c.edit(&snap)
			after := buildSnap(b, snap)
			b.Run(fmt.Sprintf("users=%d/%s", n, c.name), func(b *testing.B) {
				var delta []byte
				var ops int
				for range b.N {
					o, err := compiler.Diff(before.Doc, after.Doc)
					if err != nil {
						b.Fatal(err)
					}
					if delta, err = compiler.DeltaBundle(after.Revision, o, after.Doc); err != nil {
						b.Fatal(err)
					}
					ops = len(o)
				}
				b.ReportMetric(float64(len(delta)), "delta-bytes")
				b.ReportMetric(float64(ops), "ops")
				b.ReportMetric(float64(len(after.Data)), "snapshot-bytes")
				b.ReportMetric(float64(after.DataSize)/(1<<20), "data-MiB")
			})
		}
	}
}
