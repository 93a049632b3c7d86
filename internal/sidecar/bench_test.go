package sidecar

import (
	"bytes"
	"os"
	"runtime/debug"

	"context"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkCheck measures one in-process Check (translation, JWT from the verified-token cache, policy
// evaluation, response) of an allowed request against the demo bundle, with the GC target `keygate authz`
// runs with (--gc-percent 400) unless GOGC is set.
func BenchmarkCheck(b *testing.B) {
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	for _, bc := range []struct {
		name string
		logs bool
	}{{"allow", false}, {"allow_with_decision_logs", true}} {
		b.Run(bc.name, func(b *testing.B) {
			benchChecks(b, build(b, demoModel(b, nil), nil).Data, bc.logs)
		})
	}
}

// BenchmarkCheckOverhead is BenchmarkCheck with a constant policy: the sidecar's own cost (translation,
// JWT cache, pool hand-off, result conversion, response, metrics) without the demo policy's evaluation.
func BenchmarkCheckOverhead(b *testing.B) {
	var buf bytes.Buffer
	bb := opabundle.Bundle{
		Manifest: opabundle.Manifest{Revision: "bench", Roots: &[]string{"keygate"}},
		Data:     map[string]any{"keygate": map[string]any{"db": map[string]any{}}},
		Modules: []opabundle.ModuleFile{{URL: "/envoy.rego", Path: "/envoy.rego", Raw: []byte(`package keygate.envoy
response := {"allowed": true, "http_status": 200, "user": input.identity.user, "org": input.parsed_path[3], "reasons": []}
`)}},
	}
	if err := opabundle.NewWriter(&buf).Write(bb); err != nil {
		b.Fatal(err)
	}
	benchChecks(b, buf.Bytes(), false)
}

// benchChecks runs a sidecar on a bundle file and measures allowed Checks of u-alice (with a keygate token id).
func benchChecks(b *testing.B, bundle []byte, logs bool) {
	path := filepath.Join(b.TempDir(), "bundle.tar.gz")
	if err := writeFile(path, bundle); err != nil {
		b.Fatal(err)
	}
	dev := newDevIdentity(b)
	s := startSidecar(b, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev),
		DecisionLogs: DecisionLogConfig{Disabled: !logs}})
	waitFor(b, "the bundle", s.Ready)
	req := checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", map[string]string{
		"authorization": "Bearer " + dev.token(b, "u-alice", "tok-alice", time.Hour),
		"accept":        "application/json", "user-agent": "bench", "x-request-id": "abc",
	})
	ctx := context.Background()
	if resp, _ := s.Check(ctx, req); resp.GetOkResponse() == nil {
		b.Fatalf("not allowed: %v", resp)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
