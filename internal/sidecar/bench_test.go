package sidecar

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"
)

// BenchmarkCheck measures one in-process Check (translation, JWT from the verified-token cache, policy
// evaluation, response) against the demo bundle, with the GC target `keygate authz` runs with (--gc-percent
// 400) unless GOGC is set: an allowed request, and a denial of each kind Envoy sees (no grant, a revoked token,
// no token, an unknown route, a missing org, a malformed path). Each is one evaluation at most.
func BenchmarkCheck(b *testing.B) {
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	for _, bc := range []struct {
		name   string
		logs   bool
		user   string // "" = no Authorization header
		token  string
		method string
		path   string
		reason string // "" = allowed
	}{
		{"allow", false, "u-alice", "tok-alice", "GET", "/api/identity/orgs/org-layer5/users", ""},
		{"allow_with_decision_logs", true, "u-alice", "tok-alice", "GET", "/api/identity/orgs/org-layer5/users", ""},
		{"deny_no_grant", false, "u-heidi", "tok-heidi", "DELETE", "/api/identity/orgs/org-layer5/roles/r-1", "no_grant"},
		{"deny_token_revoked", false, "u-bob", "tok-bob-revoked", "GET", "/api/identity/orgs/org-layer5/users", "token_revoked"},
		{"deny_unauthenticated", false, "", "", "GET", "/api/identity/orgs/org-layer5/users", "unauthenticated"},
		{"deny_route_not_found", false, "u-alice", "tok-alice", "GET", "/api/identity/orgs/org-layer5/nope", "route_not_found"},
		{"deny_missing_org", false, "u-alice", "tok-alice", "GET", "/api/identity/users/profile", "missing_org"},
		{"deny_invalid_path", false, "u-alice", "tok-alice", "GET", "/api/identity/orgs//users", "invalid_path"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchChecks(b, build(b, demoModel(b, nil), nil).Data, bc.logs, func(dev devIdentity) *authv3.CheckRequest {
				h := map[string]string{"accept": "application/json", "user-agent": "bench", "x-request-id": "abc"}
				if bc.user != "" {
					h["authorization"] = "Bearer " + dev.token(b, bc.user, bc.token, time.Hour)
				}
				return checkReq(bc.method, bc.path, "identity", h)
			}, bc.reason)
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
	benchChecks(b, buf.Bytes(), false, func(dev devIdentity) *authv3.CheckRequest {
		return checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", map[string]string{
			"authorization": "Bearer " + dev.token(b, "u-alice", "tok-alice", time.Hour),
			"accept":        "application/json", "user-agent": "bench", "x-request-id": "abc",
		})
	}, "")
}

// benchChecks runs a sidecar on a bundle file and measures Checks of one request, first checking that it gets
// the expected answer (reason "" = allowed).
func benchChecks(b *testing.B, bundle []byte, logs bool, request func(devIdentity) *authv3.CheckRequest, reason string) {
	path := filepath.Join(b.TempDir(), "bundle.tar.gz")
	if err := writeFile(path, bundle); err != nil {
		b.Fatal(err)
	}
	dev := newDevIdentity(b)
	s := startSidecar(b, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev),
		DecisionLogs: DecisionLogConfig{Disabled: !logs}})
	waitFor(b, "the bundle", s.Ready)
	req := request(dev)
	ctx := context.Background()
	resp, _ := s.Check(ctx, req)
	if reason == "" && resp.GetOkResponse() == nil {
		b.Fatalf("not allowed: %v", resp)
	}
	if reason != "" && !strings.Contains(resp.GetDeniedResponse().GetBody(), `"reason":"`+reason+`"`) {
		b.Fatalf("want a denial with %s, got %v", reason, resp)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
