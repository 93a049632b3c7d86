package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/envoyauth"
)

// FuzzCheck feeds arbitrary bytes to the Check handler as gRPC delivers them (checkBytes): the answer is
// always a CheckResponse, allowed or denied with a documented reason code and a JSON body, never a panic or
// an internal failure (evaluation_error, deadline_exceeded with a 10s budget, no_bundle). Seeded with valid
// requests and the hostile ones of TestHostileCheckRequestsAreDenied, kept small so that the fuzzer's
// minimisation stays quick (max_request_bytes is 4 KiB here, metadata 200 deep stands for 4,000).
func FuzzCheck(f *testing.F) {
	fx := newCheckFixture(f, Config{MaxRequestBytes: 4 << 10, CheckTimeout: 10 * time.Second})
	alice := "Bearer " + fx.dev.token(f, "u-alice", "tok-alice", 24*time.Hour)
	heidi := "Bearer " + fx.dev.token(f, "u-heidi", "tok-heidi", 24*time.Hour)
	add := func(req *authv3.CheckRequest) {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	add(&authv3.CheckRequest{})
	add(checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", map[string]string{"authorization": alice}))
	add(checkReq("POST", "/api/identity/orgs/org-layer5/roles", "identity", map[string]string{"authorization": heidi}))
	add(checkReq("GET", "/api/identity/users/profile", "identity", map[string]string{"authorization": alice, "x-current-orgid": "org-layer5"}))
	add(checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", map[string]string{"authorization": alice, "x-http-method-override": "DELETE"}))
	add(checkReq("PUT", "/api/identity/orgs/org-layer5/roles/", "identity", map[string]string{"authorization": alice}))
	add(checkReq("GET", "/api/identity/orgs/%2e%2e/users?x=1#f", "identity", map[string]string{"authorization": alice}))
	add(headerMapReq("GET", "/api/identity/orgs/org-layer5/users", [2]string{"authorization", heidi}, [2]string{"authorization", alice}))
	md := checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", nil)
	payload, _ := structpb.NewStruct(map[string]any{"verified_jwt": map[string]any{"sub": "u-alice", "jti": "tok-alice"}})
	md.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": payload}}
	add(md)
	for _, depth := range []int{30, 200} {
		deep := checkReq("GET", "/a", "identity", nil)
		deep.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"x": deepStruct(depth)}}
		add(deep)
	}
	for _, tc := range hostileRequests(f, alice) {
		if len(tc.raw) <= 4<<10 {
			f.Add(tc.raw)
		}
	}
	add(checkReq("GET", "/a", "identity", map[string]string{"x-filler": strings.Repeat("a", 5<<10)}))

	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw []byte) {
		resp := fx.s.checkBytes(ctx, raw)
		if resp == nil {
			t.Fatal("no response")
		}
		if resp.GetStatus().GetCode() == int32(code.Code_OK) {
			if resp.GetOkResponse() == nil {
				t.Fatalf("OK without an OkHttpResponse: %v", resp)
			}
			return
		}
		den := resp.GetDeniedResponse()
		if c := resp.GetStatus().GetCode(); (c != int32(code.Code_PERMISSION_DENIED) && c != int32(code.Code_UNAUTHENTICATED)) || den == nil {
			t.Fatalf("neither allowed nor denied: %v", resp)
		}
		var body struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(den.GetBody()), &body); err != nil {
			t.Fatalf("body %q: %v", den.GetBody(), err)
		}
		switch {
		case !envoyauth.KnownReason(body.Reason):
			t.Fatalf("unknown reason %q (body %s)", body.Reason, den.GetBody())
		case body.Reason == envoyauth.ReasonEvaluationError || body.Reason == envoyauth.ReasonDeadlineExceeded ||
			body.Reason == envoyauth.ReasonNoBundle:
			t.Fatalf("internal failure %s for %x", body.Reason, raw)
		}
	})
}

// fastPathFuzzValues bind route parameters (the demo's ids, unknown ones); the fuzzer's own string joins them.
var fastPathFuzzValues = []string{"org-layer5", "org-meshery", "org-nope", "team-platform", "team-labs", "ws-prod",
	"ws-labs", "design-gateway", "design-catalog", "u-heidi", "u-alice", "x1"}

// fastPathFuzzSubjects are (user, token) pairs: admins, plain users, deleted and revoked ones, unknown tokens.
var fastPathFuzzSubjects = [][2]string{{"u-alice", "tok-alice"}, {"u-alice", ""}, {"u-heidi", "tok-heidi"},
	{"u-heidi", ""}, {"u-bob", "tok-bob-revoked"}, {"u-carol", "tok-carol-expired"}, {"u-trent", "tok-trent"},
	{"u-alice", "jwt-session-id"}, {"u-nobody", ""}}

// Mutations of a generated path (FuzzFastPathMatchesPolicy's op).
const (
	opNone = iota
	opTrailingSlash
	opDropLast
	opAppend
	opReplace
	opEmpty
	opDot
	opDotDot
	opEncode
	opDoubleSlash
	opMethodCase
	opCount
)

// FuzzFastPathMatchesPolicy is the differential fuzzer of the Go fast path against
// data.keygate.envoy.response (compareFastAndPolicy): requests generated from the route table's patterns,
// with parameters bound to demo ids or the fuzzer's string, mutated (trailing slash, a missing or extra
// segment, an empty / "." / ".." / percent-encoded segment, "//", the method's case), with org headers and
// identities drawn from the demo. A request NewRequest refuses is denied before any decision and skipped.
// The evaluation budget is 10s, not 100ms: a fuzzing worker is instrumented and slow, and a deadline is not a
// disagreement.
func FuzzFastPathMatchesPolicy(f *testing.F) {
	fx := newCheckFixture(f, Config{CheckTimeout: 10 * time.Second})
	q := fx.s.engine.current.Load()
	if q == nil || q.fast == nil {
		f.Fatal("no fast path for the demo bundle")
	}
	routes, err := catalog.IdentityRoutes()
	if err != nil {
		f.Fatal(err)
	}
	rts := routes.Routes
	for i := range rts {
		for op := range opCount {
			f.Add(uint16(i), uint8(i), uint8(0), uint8(op), "x1", uint8(1), uint8(0))
			f.Add(uint16(i), uint8(0), uint8(255), uint8(op), "org-layer5", uint8(2), uint8(2))
		}
	}
	f.Fuzz(func(t *testing.T, route uint16, value, seg, op uint8, extra string, org, subject uint8) {
		rt := rts[int(route)%len(rts)]
		method := rt.Method
		var segs []string
		for i, s := range strings.Split(strings.TrimPrefix(rt.Path, "/"), "/") {
			if strings.HasPrefix(s, "{") {
				s = fastPathFuzzValues[(int(value)+i)%len(fastPathFuzzValues)]
			}
			segs = append(segs, s)
		}
		at := int(seg) % len(segs)
		switch op % opCount {
		case opTrailingSlash:
			segs = append(segs, "")
		case opDropLast:
			segs = segs[:len(segs)-1]
		case opAppend:
			segs = append(segs, extra)
		case opReplace:
			segs[at] = extra
		case opEmpty:
			segs[at] = ""
		case opDot:
			segs[at] = "."
		case opDotDot:
			segs[at] = ".."
		case opEncode:
			segs[at] = url.PathEscape(segs[at] + extra)
		case opDoubleSlash:
			segs[at] = "/" + segs[at]
		case opMethodCase:
			method = strings.ToLower(method)
		}
		path := "/" + strings.Join(segs, "/")
		headers := map[string]string{}
		switch orgs := append([]string{"", extra}, fastPathFuzzValues[:3]...); {
		case org&0x80 != 0:
			headers["layer5-current-orgid"] = orgs[int(org&0x7f)%len(orgs)]
		default:
			headers["x-current-orgid"] = orgs[int(org)%len(orgs)]
		}
		r, err := envoyauth.NewRequest(checkReq(method, path, "identity", headers))
		if err != nil {
			return // denied before any decision (invalid_path, path_too_long, ambiguous_request)
		}
		sub := fastPathFuzzSubjects[int(subject)%len(fastPathFuzzSubjects)]
		r.WithIdentity(envoyauth.Identity{User: sub[0], Token: sub[1]})
		compareFastAndPolicy(t, fx.s, q, r, fmt.Sprintf("%s %q headers %v as %v", method, path, headers, sub))
	})
}
