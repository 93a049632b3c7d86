package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/identity"
)

// opaEnvoyPlugin is the stock opa-envoy-plugin binary in ../shared/tools (see its README). Without it the test
// is skipped, except under CI, where it fails.
func opaEnvoyPlugin(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs("../../../shared/tools/opa-envoy-plugin")
	if err == nil {
		if _, err = os.Stat(bin); err == nil {
			return bin
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the stock opa-envoy-plugin is required under CI: %v", err)
	}
	t.Skipf("no stock opa-envoy-plugin at ../shared/tools: %v", err)
	return ""
}

// startOPAEnvoy serves bundle (a file) with the stock opa-envoy-plugin at path keygate/envoy/response on a unix
// socket and returns a client.
func startOPAEnvoy(t *testing.T, bin, bundle, verificationKey string) authv3.AuthorizationClient {
	t.Helper()
	dir, err := os.MkdirTemp("", "kg-oe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	grpcSock := filepath.Join(dir, "grpc.sock")
	conf := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`plugins:
  envoy_ext_authz_grpc:
    addr: unix://%s
    path: keygate/envoy/response
decision_logs:
  console: false
`, grpcSock)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "run", "--server", "--addr", "unix://"+filepath.Join(dir, "http.sock"),
		"--config-file", conf, "--verification-key", verificationKey, "--signing-alg", "RS256", "-b", bundle)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("opa-envoy-plugin output:\n%s", logs.String())
		}
	})
	conn, err := grpc.NewClient("unix://"+grpcSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := authv3.NewAuthorizationClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := c.Check(context.Background(), checkReq("GET", "/", "identity", nil))
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("opa-envoy-plugin did not answer: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// answer is what Envoy does with a CheckResponse: allow (with these upstream headers set and removed) or
// deny (with this status, these response headers and this JSON body). The decision id, which only keygate
// sends, is left out.
type answer struct {
	Allowed bool              `json:"allowed"`
	Status  int32             `json:"status,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Remove  []string          `json:"remove,omitempty"`
	Body    map[string]any    `json:"body,omitempty"`
}

func answerOf(t *testing.T, resp *authv3.CheckResponse) answer {
	t.Helper()
	headers := func(hs []*corev3.HeaderValueOption) map[string]string {
		m := map[string]string{}
		for _, h := range hs {
			if k := strings.ToLower(h.GetHeader().GetKey()); k != "x-keygate-decision-id" {
				m[k] = h.GetHeader().GetValue()
			}
		}
		return m
	}
	if ok := resp.GetOkResponse(); resp.GetStatus().GetCode() == 0 {
		remove := append([]string(nil), ok.GetHeadersToRemove()...)
		sort.Strings(remove)
		return answer{Allowed: true, Headers: headers(ok.GetHeaders()), Remove: remove}
	}
	d := resp.GetDeniedResponse()
	a := answer{Status: int32(d.GetStatus().GetCode()), Headers: headers(d.GetHeaders())}
	if err := json.Unmarshal([]byte(d.GetBody()), &a.Body); err != nil {
		// opa-envoy-plugin's own errors (a request it cannot parse) are plain text: a denial all the same.
		a.Body = map[string]any{"unparsed": true}
		a.Status, a.Headers = 0, nil
	}
	delete(a.Body, "decision_id")
	return a
}

// TestStockOPAEnvoyAnswersAlike serves keygate's own signed bundle with a stock opa-envoy-plugin (path
// keygate/envoy/response) and sends the same CheckRequests to it and to keygate authz, once taking the identity
// from jwt_authn metadata and once verifying the bearer JWT itself: every request (allowed, and denied for
// every reason the policy and the Go side give) gets the same allow/deny, HTTP status, headers and body.
func TestStockOPAEnvoyAnswersAlike(t *testing.T) {
	t.Parallel()
	bin := opaEnvoyPlugin(t)
	keys := newSigningPair(t)
	b := build(t, demoModel(t, nil), keys.private)
	bundleFile := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(bundleFile, b.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newBundleServer(t, b.Data, b.Revision)
	dev := newDevIdentity(t)
	bundleCfg := func(c Config) Config {
		c.Bundle.URL = srv.URL + "/bundles/keygate.tar.gz"
		c.Bundle.VerificationKey = keys.pubFile
		return c
	}
	// A generous deadline: this test compares answers, and a shared machine may be slow.
	fromMetadata := startSidecar(t, bundleCfg(Config{IdentityFromMetadata: true, CheckTimeout: 30 * time.Second}))
	fromJWT := startSidecar(t, bundleCfg(Config{Identity: identity.Config{JWKSFile: dev.jwksFile}, CheckTimeout: 30 * time.Second}))
	waitFor(t, "the first bundle", func() bool { return fromMetadata.Ready() && fromJWT.Ready() })
	stock := startOPAEnvoy(t, bin, bundleFile, keys.pubFile)
	keygateMeta := authv3.NewAuthorizationClient(dial(t, fromMetadata))
	keygateJWT := authv3.NewAuthorizationClient(dial(t, fromJWT))

	routes, err := catalog.IdentityRoutes()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string][]string{
		"org": {"org-layer5", "org-nope"}, "team": {"team-platform"}, "workspace": {"ws-prod"},
		"design": {"design-gateway"}, "user": {"u-heidi"},
	}
	type subject struct{ user, token string }
	subjects := []subject{{"u-alice", "tok-alice"}, {"u-heidi", "tok-heidi"}, {"u-bob", "tok-bob-revoked"},
		{"u-carol", "tok-carol-expired"}, {"u-mallory", ""}, {"", ""}}
	type request struct {
		method, path string
		headers      map[string]string
		sub          subject
	}
	var reqs []request
	for _, rt := range routes.Routes {
		for _, path := range expand(rt, values) {
			for _, sub := range subjects {
				reqs = append(reqs, request{rt.Method, path, map[string]string{"x-current-orgid": "org-layer5"}, sub})
			}
			reqs = append(reqs, request{rt.Method, path, nil, subjects[0]})
		}
	}
	for _, p := range []string{"/api/identity/nope", "/", "//api/identity/orgs", "/api/identity/orgs/org-layer5/roles/",
		"/api/identity/orgs/org-layer5%2F..%2Forg-meshery/teams", "/api/identity/orgs/%2e%2e/teams",
		"/api/identity/orgs/org-layer5/./teams", "/api/identity/orgs/org-layer5/teams?page=2&x=%zz"} {
		for _, sub := range subjects[:1] {
			reqs = append(reqs, request{"GET", p, map[string]string{"x-current-orgid": "org-layer5"}, sub})
		}
	}
	// Client-sent x-keygate-* headers are removed upstream.
	reqs = append(reqs, request{"GET", "/api/identity/orgs/org-layer5/teams",
		map[string]string{"x-current-orgid": "org-layer5", "x-keygate-user": "root", "x-keygate-role": "admin"}, subjects[0]})

	ctx := context.Background()
	allowed, denied := 0, map[string]int{}
	for _, rq := range reqs {
		build := func(withJWT bool) *authv3.CheckRequest {
			h := map[string]string{}
			for k, v := range rq.headers {
				h[k] = v
			}
			cr := checkReq(rq.method, rq.path, "identity", h)
			if rq.sub.user != "" {
				claims := map[string]any{"sub": rq.sub.user}
				if rq.sub.token != "" {
					claims["jti"] = rq.sub.token
				}
				payload, err := structpb.NewStruct(map[string]any{"verified_jwt": claims})
				if err != nil {
					t.Fatal(err)
				}
				cr.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
					"envoy.filters.http.jwt_authn": payload}}
				if withJWT {
					h["authorization"] = "Bearer " + dev.token(t, rq.sub.user, rq.sub.token, time.Hour)
				}
			}
			return cr
		}
		where := fmt.Sprintf("%s %s %v as %s/%s", rq.method, rq.path, rq.headers, rq.sub.user, rq.sub.token)
		got := map[string]answer{}
		for name, c := range map[string]authv3.AuthorizationClient{"stock": stock, "keygate-metadata": keygateMeta, "keygate-jwt": keygateJWT} {
			resp, err := c.Check(ctx, build(name == "keygate-jwt"))
			if err != nil {
				t.Fatalf("%s: %s: %v", where, name, err)
			}
			got[name] = answerOf(t, resp)
		}
		want, _ := json.Marshal(got["stock"])
		if got["stock"].Body["unparsed"] == true {
			// The stock plugin refused to build an input (e.g. a malformed query escape): keygate must deny.
			for _, name := range []string{"keygate-metadata", "keygate-jwt"} {
				if got[name].Allowed {
					t.Errorf("%s: %s allowed what opa-envoy-plugin could not parse", where, name)
				}
			}
			continue
		}
		for _, name := range []string{"keygate-metadata", "keygate-jwt"} {
			if g, _ := json.Marshal(got[name]); string(g) != string(want) {
				t.Errorf("%s:\n%-16s %s\nstock            %s", where, name, g, want)
			}
		}
		if got["stock"].Allowed {
			allowed++
		} else {
			r, _ := got["stock"].Body["reason"].(string)
			denied[r]++
		}
	}
	t.Logf("%d requests: %d allowed, denied by reason %v", len(reqs), allowed, denied)
	for _, r := range []string{"unauthenticated", "token_revoked", "token_expired", "no_grant", "route_not_found",
		"invalid_path", "missing_org"} {
		if denied[r] == 0 {
			t.Errorf("no request was denied with %s: the table does not cover it", r)
		}
	}
	if allowed < 50 {
		t.Errorf("only %d requests allowed", allowed)
	}
}
