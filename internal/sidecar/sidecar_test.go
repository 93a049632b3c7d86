package sidecar

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// checkFixture is one sidecar following a signed demo bundle over HTTP, shared by the Check table.
type checkFixture struct {
	s   *Sidecar
	c   authv3.AuthorizationClient
	dev devIdentity
}

func newCheckFixture(t testing.TB, cfg Config) checkFixture {
	t.Helper()
	keys := newSigningPair(t)
	b := build(t, demoModel(t, nil), keys.private)
	srv := newBundleServer(t, b.Data, b.Revision)
	dev := newDevIdentity(t)
	cfg.Bundle.URL = srv.URL + "/bundles/keygate.tar.gz"
	cfg.Bundle.VerificationKey = keys.pubFile
	cfg.Identity.JWKSFile = dev.jwksFile
	s := startSidecar(t, cfg)
	waitFor(t, "the first bundle", s.Ready)
	return checkFixture{s: s, c: authv3.NewAuthorizationClient(dial(t, s)), dev: dev}
}

type want struct {
	allowed bool
	status  int
	reason  string
	key     string
	user    string
	org     string
}

func TestCheck(t *testing.T) {
	t.Parallel()
	checkCases(t, Config{})
}

// TestCheckOnPool: the same cases with Checks evaluated on the worker pool (EvalOnPool) instead of inline.
func TestCheckOnPool(t *testing.T) {
	t.Parallel()
	checkCases(t, Config{EvalOnPool: true})
}

func checkCases(t *testing.T, cfg Config) {
	f := newCheckFixture(t, cfg)
	bearer := func(user, jti string) string { return "Bearer " + f.dev.token(t, user, jti, time.Hour) }
	alice := bearer("u-alice", "tok-alice")
	parts := strings.Split(f.dev.token(t, "u-alice", "tok-alice", time.Hour), ".")
	badSig := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u-peggy","jti":"tok-alice","exp":9999999999}`)) + "." + parts[2]
	algNone := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."
	expired, _ := identityToken(f.dev, "u-alice", "tok-alice", -time.Hour)

	cases := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		want    want
	}{
		{name: "org admin lists the org's users", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": alice},
			want:    want{allowed: true, status: 200, user: "u-alice", org: "org-layer5"}},
		{name: "plain user may not create custom roles", method: "POST", path: "/api/identity/orgs/org-layer5/roles",
			headers: map[string]string{"authorization": bearer("u-heidi", "tok-heidi")},
			want:    want{status: 403, reason: "no_grant", key: "Create Custom Roles"}},
		{name: "no token is unauthenticated", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			want: want{status: 401, reason: "unauthenticated"}},
		{name: "bad signature is an invalid token", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": "Bearer " + badSig},
			want:    want{status: 401, reason: "invalid_token"}},
		{name: "expired JWT is an invalid token", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": "Bearer " + expired},
			want:    want{status: 401, reason: "invalid_token"}},
		{name: "alg none is an invalid token", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": "Bearer " + algNone},
			want:    want{status: 401, reason: "invalid_token"}},
		{name: "non-bearer authorization is an invalid token", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": "Basic dTpw"},
			want:    want{status: 401, reason: "invalid_token"}},
		{name: "revoked token is denied", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": bearer("u-bob", "tok-bob-revoked")},
			want:    want{status: 401, reason: "token_revoked"}},
		{name: "expired bundle token is denied", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": bearer("u-carol", "tok-carol-expired")},
			want:    want{status: 401, reason: "token_expired"}},
		{name: "a JWT id keygate does not know leaves the subject to decide", method: "GET",
			path:    "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": bearer("u-alice", "tok-nope")},
			want:    want{allowed: true, status: 200, user: "u-alice", org: "org-layer5"}},
		{name: "a JWT id keygate does not know grants nothing the subject lacks", method: "DELETE",
			path:    "/api/identity/orgs/org-layer5",
			headers: map[string]string{"authorization": bearer("u-bob", "tok-nope")},
			want:    want{status: 403, reason: "owner_required"}},
		{name: "deleted user is denied", method: "GET", path: "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": bearer("u-trent", "tok-trent")},
			want:    want{status: 401, reason: "user_deleted"}},
		{name: "spoofed x-keygate-user without token is still unauthenticated", method: "GET",
			path:    "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"x-keygate-user": "u-peggy"},
			want:    want{status: 401, reason: "unauthenticated"}},
		{name: "spoofed x-keygate-user is replaced by the verified subject", method: "GET",
			path:    "/api/identity/orgs/org-layer5/users",
			headers: map[string]string{"authorization": alice, "x-keygate-user": "u-peggy", "x-keygate-role": "admin"},
			want:    want{allowed: true, status: 200, user: "u-alice", org: "org-layer5"}},
		{name: "unknown route is denied", method: "GET", path: "/api/identity/nowhere",
			headers: map[string]string{"authorization": alice},
			want:    want{status: 403, reason: "route_not_found"}},
		{name: "header-org route without org is denied", method: "GET", path: "/api/identity/users/profile",
			headers: map[string]string{"authorization": alice},
			want:    want{status: 403, reason: "missing_org"}},
		{name: "header-org route with org is allowed", method: "GET", path: "/api/identity/users/profile",
			headers: map[string]string{"authorization": alice, "x-current-orgid": "org-layer5"},
			want:    want{allowed: true, status: 200, user: "u-alice", org: "org-layer5"}},
		{name: "double slash is an invalid path", method: "GET", path: "//admin",
			headers: map[string]string{"authorization": alice}, want: want{status: 403, reason: "invalid_path"}},
		{name: "dot-dot is an invalid path", method: "GET", path: "/a/../admin",
			headers: map[string]string{"authorization": alice}, want: want{status: 403, reason: "invalid_path"}},
		{name: "encoded dot-dot is an invalid path", method: "GET", path: "/api/identity/orgs/%2e%2e/users",
			headers: map[string]string{"authorization": alice}, want: want{status: 403, reason: "invalid_path"}},
		{name: "encoded slash is an invalid path", method: "GET", path: "/api/identity/orgs/org-layer5%2fusers",
			headers: map[string]string{"authorization": alice}, want: want{status: 403, reason: "invalid_path"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := f.c.Check(context.Background(), checkReq(tc.method, tc.path, "identity", tc.headers))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			assertResponse(t, resp, tc.want, tc.headers)
		})
	}
	t.Run("unknown service is route_not_found", func(t *testing.T) {
		t.Parallel()
		resp, err := f.c.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "billing",
			map[string]string{"authorization": alice}))
		if err != nil {
			t.Fatal(err)
		}
		assertResponse(t, resp, want{status: 403, reason: "route_not_found"}, nil)
	})
}

func identityToken(d devIdentity, user, jti string, ttl time.Duration) (string, error) {
	return mintAt(d, user, jti, time.Now().Add(-2*time.Hour), ttl+2*time.Hour)
}

func assertResponse(t *testing.T, resp *authv3.CheckResponse, w want, reqHeaders map[string]string) {
	t.Helper()
	if w.allowed {
		ok := resp.GetOkResponse()
		if resp.GetStatus().GetCode() != int32(code.Code_OK) || ok == nil {
			t.Fatalf("want allow, got %v", resp)
		}
		hs := map[string]string{}
		for _, h := range ok.GetHeaders() {
			hs[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		if hs["x-keygate-user"] != w.user || hs["x-keygate-org"] != w.org || hs["x-keygate-decision-id"] == "" {
			t.Fatalf("upstream headers %v, want user %q org %q and a decision id", hs, w.user, w.org)
		}
		for h := range reqHeaders {
			if strings.HasPrefix(h, "x-keygate-") && hs[h] == "" && !slices.Contains(ok.GetHeadersToRemove(), h) {
				t.Fatalf("client header %s neither overwritten nor removed (remove: %v)", h, ok.GetHeadersToRemove())
			}
		}
		return
	}
	den := resp.GetDeniedResponse()
	if den == nil {
		t.Fatalf("want deny %s, got %v", w.reason, resp)
	}
	if int(den.GetStatus().GetCode()) != w.status {
		t.Fatalf("status %d, want %d (body %s)", den.GetStatus().GetCode(), w.status, den.GetBody())
	}
	wantCode := code.Code_PERMISSION_DENIED
	if w.status == 401 {
		wantCode = code.Code_UNAUTHENTICATED
	}
	if resp.GetStatus().GetCode() != int32(wantCode) {
		t.Fatalf("grpc status %v, want %v", resp.GetStatus(), wantCode)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(den.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", den.GetBody(), err)
	}
	if body["reason"] != w.reason || body["decision_id"] == "" || body["decision_id"] == nil {
		t.Fatalf("body %v, want reason %q and a decision id", body, w.reason)
	}
	if w.key != "" && body["missing_key"] != w.key && body["key_name"] != w.key {
		t.Fatalf("body %v, want missing key %q", body, w.key)
	}
	var ct string
	for _, h := range den.GetHeaders() {
		if h.GetHeader().GetKey() == "content-type" {
			ct = h.GetHeader().GetValue()
		}
	}
	if ct != "application/json" {
		t.Fatalf("content-type %q", ct)
	}
}

func TestNoBundleYet(t *testing.T) {
	t.Parallel()
	srv := newBundleServer(t, nil, "")
	srv.Config.Handler = http.NotFoundHandler() // the bundle server has nothing yet
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{URL: srv.URL + "/b.tar.gz"}, Identity: identityFile(dev)})
	conn := dial(t, s)
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(),
		checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity",
			map[string]string{"authorization": "Bearer " + dev.token(t, "u-alice", "tok-alice", time.Hour)}))
	if err != nil {
		t.Fatal(err)
	}
	assertResponse(t, resp, want{status: 403, reason: "no_bundle"}, nil)

	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health %v %v, want NOT_SERVING", h, err)
	}
	if code := httpGet(t, "http://"+s.HTTPAddr().String()+"/health?bundles"); code != 500 {
		t.Fatalf("/health?bundles = %d before a bundle, want 500", code)
	}
	if code := httpGet(t, "http://"+s.HTTPAddr().String()+"/health"); code != 200 {
		t.Fatalf("/health = %d, want 200", code)
	}
}

func identityFile(d devIdentity) (c identityConfig) {
	c.JWKSFile = d.jwksFile
	return c
}

func httpGet(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func TestDryRunAllowsAndCounts(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{DryRun: true})
	resp, err := f.c.Check(context.Background(), checkReq("POST", "/api/identity/orgs/org-layer5/roles", "identity",
		map[string]string{"authorization": "Bearer " + f.dev.token(t, "u-heidi", "tok-heidi", time.Hour)}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil {
		t.Fatalf("dry run denied: %v", resp)
	}
	if got := counterValue(t, f.s, "keygate_decisions_total", "dry_run"); got != 1 {
		t.Fatalf("dry_run decisions = %v, want 1", got)
	}
	if got := counterValue(t, f.s, "keygate_jwt_failures_total", "missing"); got != 0 {
		t.Fatalf("missing = %v", got)
	}
	if code := httpGet(t, "http://"+f.s.HTTPAddr().String()+"/metrics"); code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	if code := httpGet(t, "http://"+f.s.HTTPAddr().String()+"/health?bundles"); code != 200 {
		t.Fatalf("/health?bundles = %d after activation", code)
	}
}
