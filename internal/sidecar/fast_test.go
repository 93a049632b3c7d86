package sidecar

import (
	"context"
	"github.com/open-policy-agent/opa/v1/ast"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/envoyauth"
	"github.com/keygate/keygate/internal/model"
)

// TestFastPathMatchesPolicy holds the Go fast path to the policy: over every route of the demo route table,
// with org and resource parameters bound to demo ids (and unknown ones), every demo user and their tokens,
// a request the fast path allows is allowed by data.keygate.envoy.response with the same status, user, org,
// key, route and headers; and every request the policy allows is one the fast path allows (so the fast path
// is used, not just harmless).
func TestFastPathMatchesPolicy(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{})
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
	ctx := context.Background()
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
					fast, fastOK := s.fastAllow(ctx, q, r)
					v, err := s.evalCheck(ctx, &q.response, r.Input())
					if err != nil || v == nil {
						t.Fatalf("policy: %v (%v)", err, v)
					}
					result, err := ast.JSON(v)
					if err != nil {
						t.Fatal(err)
					}
					full, err := envoyauth.DecisionFromResult(result)
					if err != nil {
						t.Fatal(err)
					}
					compared++
					where := rt.Method + " " + path + " org header " + org + " as " + sub.user + "/" + sub.token
					if fastOK != full.Allowed {
						t.Errorf("%s: fast path allowed=%v, policy allowed=%v (%v)", where, fastOK, full.Allowed, full.Reasons)
						continue
					}
					if !fastOK {
						continue
					}
					allowed++
					if fast.HTTPStatus != full.HTTPStatus || fast.User != full.User || fast.Org != full.Org ||
						fast.Key != full.Key || fast.KeyName != full.KeyName || fast.Route != full.Route {
						t.Errorf("%s:\nfast   %+v\npolicy %+v", where, fast, full)
					}
					// What Envoy receives is the same response.
					spoofed := []string{"x-keygate-user", "x-keygate-extra"}
					if a, b := envoyauth.CheckResponse(fast, "id", spoofed), envoyauth.CheckResponse(full, "id", spoofed); !proto.Equal(a, b) {
						t.Errorf("%s: responses differ:\nfast   %v\npolicy %v", where, a, b)
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
