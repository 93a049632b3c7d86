package sidecar

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/envoyauth"
	"github.com/keygate/keygate/internal/model"
)

// TestFastPathMatchesPolicy holds the Go fast path to the policy: over every route of the demo route table,
// with org and resource parameters bound to demo ids (and unknown ones), every demo user and their tokens,
// every request the fast path answers gets data.keygate.envoy.response's answer (allowed or denied, same
// status, reasons, body and headers).
func TestFastPathMatchesPolicy(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{CheckTimeout: 30 * time.Second}) // compares answers: no production deadline
	s := f.s
	q := s.engine.current.Load()
	if q == nil || q.fast == nil {
		t.Fatal("no fast path for the demo bundle")
	}
	routes, err := catalog.IdentityRoutes()
	if err != nil {
		t.Fatal(err)
	}
	demo, err := catalog.Demo()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string][]string{
		"org":       {"org-layer5", "org-meshery", "org-nope"},
		"team":      {"team-platform", "team-labs"},
		"workspace": {"ws-prod", "ws-labs", "ws-nope"},
		"design":    {"design-gateway", "design-catalog"},
		"user":      {"u-heidi", "u-alice"},
	}
	type subject struct{ user, token string }
	var subjects []subject
	tokenOf := map[string]string{}
	for _, tok := range demo.Tokens {
		tokenOf[tok.User] = tok.ID
	}
	for _, u := range demo.Users {
		subjects = append(subjects, subject{u.ID, ""}, subject{u.ID, "jwt-session-id"})
		if tok := tokenOf[u.ID]; tok != "" {
			subjects = append(subjects, subject{u.ID, tok})
		}
	}
	compared, allowed := 0, 0
	for _, rt := range routes.Routes {
		for _, path := range expand(rt, values) {
			for _, org := range append([]string{""}, values["org"]...) {
				headers := map[string]string{}
				if org != "" {
					headers["x-current-orgid"] = org
				}
				for _, sub := range subjects {
					r, err := envoyauth.NewRequest(checkReq(rt.Method, path, "identity", headers))
					if err != nil {
						t.Fatalf("%s %s: %v", rt.Method, path, err)
					}
					r.WithIdentity(envoyauth.Identity{User: sub.user, Token: sub.token})
					where := rt.Method + " " + path + " org header " + org + " as " + sub.user + "/" + sub.token
					compared++
					if compareFastAndPolicy(t, s, q, r, where) {
						allowed++
					}
				}
			}
		}
	}
	if allowed < 100 || allowed == compared {
		t.Fatalf("compared %d requests, %d allowed: the table does not exercise both answers", compared, allowed)
	}
	t.Logf("compared %d requests (%d allowed)", compared, allowed)
}

// expand binds a route pattern's parameters to every combination of values (unknown names get "x1").
func expand(rt model.Route, values map[string][]string) []string {
	paths := []string{""}
	for _, seg := range strings.Split(strings.TrimPrefix(rt.Path, "/"), "/") {
		opts := []string{seg}
		if strings.HasPrefix(seg, "{") {
			opts = values[strings.Trim(seg, "{}")]
			if len(opts) == 0 {
				opts = []string{"x1"}
			}
		}
		var next []string
		for _, p := range paths {
			for _, o := range opts {
				next = append(next, p+"/"+o)
			}
		}
		paths = next
	}
	return paths
}

// compareFastAndPolicy evaluates a prepared request through the fast path and through the full
// data.keygate.envoy.response and reports any difference: where the fast path answers (a matched route), its
// decision and the CheckResponse Envoy gets must be the policy's, allowed or denied. It returns whether the
// policy allowed. The policy runs without the production deadline (a test beside other packages is slow, not
// wrong).
func compareFastAndPolicy(t testing.TB, s *Sidecar, q *queries, r *envoyauth.Request, where string) bool {
	t.Helper()
	ctx := context.Background()
	fast, fastOK, failed := s.fastDecide(ctx, q, r)
	if failed {
		t.Fatalf("%s: the fast path failed: %+v", where, fast)
	}
	v, err := s.engine.hot.Eval(ctx, &q.response, r.Input(), time.Minute)
	if err != nil || v == nil {
		t.Fatalf("%s: policy: %v (%v)", where, err, v)
	}
	result, err := ast.JSON(v)
	if err != nil {
		t.Fatal(err)
	}
	full, err := envoyauth.DecisionFromResult(result)
	if err != nil {
		t.Fatal(err)
	}
	if !fastOK {
		return full.Allowed
	}
	if fast.Allowed != full.Allowed || fast.HTTPStatus != full.HTTPStatus || fast.Reason != full.Reason ||
		!slices.Equal(fast.Reasons, full.Reasons) || fast.User != full.User || fast.Org != full.Org ||
		fast.Key != full.Key || fast.KeyName != full.KeyName || fast.Route != full.Route || fast.Body != full.Body {
		t.Errorf("%s:\nfast   %+v\npolicy %+v", where, fast, full)
	}
	// What Envoy receives is the same response.
	spoofed := []string{"x-keygate-user", "x-keygate-extra"}
	if a, b := envoyauth.CheckResponse(fast, "id", spoofed), envoyauth.CheckResponse(full, "id", spoofed); !proto.Equal(a, b) {
		t.Errorf("%s: responses differ:\nfast   %v\npolicy %v", where, a, b)
	}
	return full.Allowed
}

// TestFastPathRefusesMalformedPaths is the regression test of the trailing-slash bypass: a path whose last
// parameter is empty ("PUT /api/identity/orgs/org-layer5/roles/") was allowed by the fast path while the
// policy answers invalid_path. Every route, as u-alice (who holds every key in org-layer5), with its last
// segment emptied, a trailing slash added, and "." or ".." in place of a parameter, must get the policy's
// answer: never an allow.
func TestFastPathRefusesMalformedPaths(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{CheckTimeout: 30 * time.Second}) // compares answers: no production deadline
	q := f.s.engine.current.Load()
	routes, err := catalog.IdentityRoutes()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string][]string{"org": {"org-layer5"}, "team": {"team-platform"}, "workspace": {"ws-prod"},
		"design": {"design-gateway"}, "user": {"u-heidi"}}
	alice := f.dev.token(t, "u-alice", "tok-alice", time.Hour)
	tried := 0
	for _, rt := range routes.Routes {
		for _, path := range expand(rt, values) {
			segs := strings.Split(path, "/")
			variants := []string{path + "/", strings.Join(segs[:len(segs)-1], "/") + "/"}
			for i, seg := range strings.Split(strings.TrimPrefix(rt.Path, "/"), "/") {
				if strings.HasPrefix(seg, "{") {
					for _, bad := range []string{"", ".", ".."} {
						v := append([]string(nil), segs...)
						v[i+1] = bad
						variants = append(variants, strings.Join(v, "/"))
					}
				}
			}
			for _, p := range variants {
				r, err := envoyauth.NewRequest(checkReq(rt.Method, p, "identity", map[string]string{"x-current-orgid": "org-layer5"}))
				if err != nil {
					continue // refused before any decision: invalid_path
				}
				r.WithIdentity(envoyauth.Identity{User: "u-alice", Token: "tok-alice"})
				tried++
				if compareFastAndPolicy(t, f.s, q, r, rt.Method+" "+p) {
					t.Errorf("%s %s: allowed (the policy allows a malformed path)", rt.Method, p)
				}
				// And end to end: the Check Envoy would send is denied as invalid_path.
				resp, err := f.c.Check(context.Background(), checkReq(rt.Method, p, "identity", map[string]string{
					"x-current-orgid": "org-layer5", "authorization": "Bearer " + alice}))
				if err != nil {
					t.Fatalf("%s %s: %v", rt.Method, p, err)
				}
				if resp.GetStatus().GetCode() == 0 {
					t.Errorf("%s %s: the Check was allowed", rt.Method, p)
				}
			}
		}
	}
	if tried < 40 {
		t.Fatalf("only %d malformed requests reached a decision", tried)
	}
	t.Logf("%d malformed requests compared", tried)
}
