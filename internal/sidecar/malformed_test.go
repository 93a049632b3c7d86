package sidecar

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// TestMalformedCheckRequests: requests missing parts Envoy always sends are denied with a reason and a JSON
// body, over the real gRPC connection; none panics or returns a gRPC error.
func TestMalformedCheckRequests(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{})
	tok := "Bearer " + f.dev.token(t, "u-alice", "", time.Hour)
	cases := []struct {
		name   string
		req    *authv3.CheckRequest
		status int
		reason string
	}{
		{"empty request", &authv3.CheckRequest{}, 403, "invalid_path"},
		{"no http request", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}, 403, "invalid_path"},
		{"no path", checkReq("GET", "", "identity", map[string]string{"authorization": tok}), 403, "invalid_path"},
		{"relative path", checkReq("GET", "api/identity/orgs", "identity", map[string]string{"authorization": tok}), 403, "invalid_path"},
		{"no method", checkReq("", "/api/identity/orgs/org-layer5/teams", "identity", map[string]string{"authorization": tok}), 403, "route_not_found"},
		{"no service", checkReq("GET", "/api/identity/orgs/org-layer5/teams", "", map[string]string{"authorization": tok}), 403, "route_not_found"},
		{"bearer without token", checkReq("GET", "/api/identity/orgs/org-layer5/teams", "identity", map[string]string{"authorization": "Bearer "}), 401, "invalid_token"},
		{"garbage token", checkReq("GET", "/api/identity/orgs/org-layer5/teams", "identity", map[string]string{"authorization": "Bearer a.b.c"}), 401, "invalid_token"},
		{"huge path", checkReq("GET", "/x/"+longSegment(), "identity", map[string]string{"authorization": tok}), 403, "path_too_long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := f.c.Check(context.Background(), tc.req)
			if err != nil {
				t.Fatalf("Check returned a gRPC error (Envoy's failure mode would decide): %v", err)
			}
			if resp.GetStatus().GetCode() == int32(code.Code_OK) {
				t.Fatalf("allowed: %v", resp)
			}
			denied := resp.GetDeniedResponse()
			if got := int(denied.GetStatus().GetCode()); got != tc.status {
				t.Errorf("HTTP status %d, want %d", got, tc.status)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil {
				t.Fatalf("body is not JSON: %q", denied.GetBody())
			}
			if body["reason"] != tc.reason {
				t.Errorf("reason %v, want %s (body %s)", body["reason"], tc.reason, denied.GetBody())
			}
		})
	}
}

func longSegment() string {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}
