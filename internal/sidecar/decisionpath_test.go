package sidecar

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"
)

func TestDecisionRef(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"keygate/envoy/response": "data.keygate.envoy.response",
		"/envoy/authz/allow":     "data.envoy.authz.allow",
		"my-app/authz":           `data["my-app"].authz`,
	} {
		if got, err := DecisionRef(in); err != nil || got != want {
			t.Errorf("DecisionRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/", "a//b", "a/", "a/ b", "a/b c/d"} {
		if got, err := DecisionRef(bad); err == nil {
			t.Errorf("DecisionRef(%q) = %q, want an error", bad, got)
		}
	}
	cfg := Config{Bundle: BundleConfig{File: "b.tar.gz"}, Identity: identityConfig{JWKSFile: "j.json"}, DecisionPath: "a//b"}
	cfg.SetDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "decision_path") {
		t.Errorf("Validate with decision_path a//b: %v, want a decision_path error", err)
	}
}

// customBundle writes an unsigned bundle holding one policy module.
func customBundle(t *testing.T, rego string) string {
	t.Helper()
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "custom-1", Roots: &[]string{""}},
		Modules:  []bundle.ModuleFile{{URL: "/custom.rego", Path: "/custom.rego", Raw: []byte(rego)}},
		Data:     map[string]any{},
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "custom.tar.gz")
	if err := writeFile(path, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCustomDecisionPath: with decision_path set, a Check evaluates that rule (opa-envoy-plugin's response
// shape), not data.keygate.envoy.response, and the fast path is off.
func TestCustomDecisionPath(t *testing.T) {
	t.Parallel()
	path := customBundle(t, `package custom.authz

import rego.v1

default response := {"allowed": false, "http_status": 401, "body": "{\"message\":\"custom says no\"}"}

response := {"allowed": true, "headers": {"x-custom": "yes"}} if input.attributes.request.http.method == "GET"
`)
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev),
		DecisionPath: "custom/authz/response"})
	waitFor(t, "the custom bundle", s.Ready)
	if q := s.engine.current.Load(); q.fast != nil {
		t.Error("the fast path is on with a custom decision path")
	}
	alice := "Bearer " + dev.token(t, "u-alice", "tok-alice", 3600e9)
	get, _ := s.Check(context.Background(), checkReq("GET", "/anything", "identity", map[string]string{"authorization": alice}))
	ok := get.GetOkResponse()
	if ok == nil {
		t.Fatalf("GET: want allowed, got %v", get)
	}
	found := false
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == "x-custom" && h.GetHeader().GetValue() == "yes" {
			found = true
		}
	}
	if !found {
		t.Errorf("GET: the custom rule's header is missing: %v", ok.GetHeaders())
	}
	post, _ := s.Check(context.Background(), checkReq("POST", "/anything", "identity", nil))
	denied := post.GetDeniedResponse()
	// keygate's renderer (envoyauth.CheckResponse): a denial is 401 or 403, its body a JSON object merging
	// the policy's body object.
	if denied == nil || denied.GetStatus().GetCode() != 401 || !strings.Contains(denied.GetBody(), `"message":"custom says no"`) {
		t.Fatalf("POST: want the custom 401 denial, got %v", post)
	}
}

// TestCustomDecisionPathUndefined: a decision path the bundle does not define denies every Check as an
// evaluation error (fail closed), even a request keygate's own policy allows.
func TestCustomDecisionPathUndefined(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{DecisionPath: "custom/authz/response"})
	alice := "Bearer " + f.dev.token(t, "u-alice", "tok-alice", 3600e9)
	resp, _ := f.s.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity",
		map[string]string{"authorization": alice}))
	if resp.GetOkResponse() != nil || !strings.Contains(resp.GetDeniedResponse().GetBody(), `"reason":"evaluation_error"`) {
		t.Fatalf("want an evaluation_error denial, got %v", resp)
	}
}
