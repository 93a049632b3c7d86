package envoyauth

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, want string
		segs           []string
	}{
		{name: "plain path", in: "/api/orgs/o1", want: "/api/orgs/o1", segs: []string{"api", "orgs", "o1"}},
		{name: "root", in: "/", want: "/", segs: []string{""}},
		{name: "trailing slash keeps an empty segment", in: "/a/", want: "/a/", segs: []string{"a", ""}},
		{name: "escaped space is decoded", in: "/a/b%20c", want: "/a/b c", segs: []string{"a", "b c"}},
		{name: "double slash", in: "//admin"},
		{name: "inner double slash", in: "/a//admin"},
		{name: "dot segment", in: "/a/./admin"},
		{name: "dot-dot segment", in: "/a/../admin"},
		{name: "trailing dot-dot", in: "/a/.."},
		{name: "encoded dots", in: "/a/%2e%2e/admin"},
		{name: "encoded dots upper case", in: "/a/%2E%2E/admin"},
		{name: "encoded slash", in: "/a%2fadmin"},
		{name: "encoded backslash", in: "/a%5cadmin"},
		{name: "backslash", in: "/a\\admin"},
		{name: "relative", in: "admin"},
		{name: "empty", in: ""},
		{name: "bad escape", in: "/a%zz"},
		{name: "truncated escape", in: "/a%2"},
		{name: "encoded NUL", in: "/a%00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, segs, err := NormalizePath(tc.in)
			if tc.want == "" {
				if !errors.Is(err, ErrInvalidPath) {
					t.Fatalf("NormalizePath(%q) = %q, %v; want ErrInvalidPath", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want || !slices.Equal(segs, tc.segs) {
				t.Fatalf("NormalizePath(%q) = %q %q %v; want %q %q", tc.in, got, segs, err, tc.want, tc.segs)
			}
		})
	}
}

func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: headers, Host: "api.local",
		}},
		ContextExtensions: map[string]string{"service": "cloud"},
	}}
}

func TestNewRequest(t *testing.T) {
	t.Parallel()
	req := checkRequest("GET", "/api/orgs/o1/teams?page=2&tag=a&tag=b", map[string]string{
		"authorization": "Bearer xyz", "x-keygate-user": "admin", "X-Current-Orgid": "o1", "accept": "*/*",
	})
	req.Attributes.MetadataContext = nil
	r, err := NewRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	r.WithIdentity(Identity{User: "u1", Token: "t1"})
	want := ast.MustParseTerm(`{
		"attributes": {
			"request": {"http": {"method": "GET", "path": "/api/orgs/o1/teams?page=2&tag=a&tag=b", "host": "api.local",
				"headers": {"x-current-orgid": "o1", "accept": "*/*"}}},
			"contextExtensions": {"service": "cloud"}
		},
		"parsed_path": ["api", "orgs", "o1", "teams"],
		"parsed_query": {"page": ["2"], "tag": ["a", "b"]},
		"parsed_body": null,
		"truncated_body": false,
		"version": {"ext_authz": "v3", "encoding": "protojson"},
		"identity": {"user": "u1", "token": "t1"}
	}`).Value
	if r.Input().Compare(want) != 0 {
		t.Fatalf("input:\n%v\nwant:\n%v", r.Input(), want)
	}
	if r.Authorization != "Bearer xyz" || !slices.Equal(r.Spoofed, []string{"x-keygate-user"}) {
		t.Fatalf("authorization %q spoofed %v", r.Authorization, r.Spoofed)
	}
}

func TestMetadataIdentity(t *testing.T) {
	t.Parallel()
	payload, _ := structpb.NewStruct(map[string]any{"jwt_payload": map[string]any{"sub": "u1", "jti": "t1"}})
	req := checkRequest("GET", "/", nil)
	req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": payload}}
	id, ok := MetadataIdentity(req, "envoy.filters.http.jwt_authn", "jwt_payload")
	if !ok || id != (Identity{User: "u1", Token: "t1"}) {
		t.Fatalf("MetadataIdentity = %+v %v", id, ok)
	}
	if _, ok := MetadataIdentity(req, "envoy.filters.http.jwt_authn", "other"); ok {
		t.Fatal("identity from a missing key")
	}
	r, err := NewRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Input().Find(ast.MustParseRef(`x.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].jwt_payload.sub`)[1:])
	if err != nil || got.Compare(ast.String("u1")) != 0 {
		t.Fatalf("metadata in input: %v %v", got, err)
	}
}

func TestCheckResponse(t *testing.T) {
	t.Parallel()
	t.Run("allow sets identity headers and removes spoofed ones", func(t *testing.T) {
		t.Parallel()
		d := Decision{Allowed: true, HTTPStatus: 200, User: "u1", Org: "o1", Headers: map[string]string{"x-keygate-key": "k"}}
		resp := CheckResponse(d, "dec-1", []string{"x-keygate-user", "x-keygate-role", "x-keygate-key"})
		if resp.GetStatus().GetCode() != int32(code.Code_OK) {
			t.Fatalf("status %v", resp.GetStatus())
		}
		got := map[string]string{}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		want := map[string]string{HeaderUser: "u1", HeaderOrg: "o1", HeaderDecisionID: "dec-1", "x-keygate-key": "k"}
		if len(got) != len(want) {
			t.Fatalf("headers %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("headers %v, want %v", got, want)
			}
		}
		if rm := resp.GetOkResponse().GetHeadersToRemove(); !slices.Equal(rm, []string{"x-keygate-role"}) {
			t.Fatalf("headers_to_remove %v", rm)
		}
	})
	t.Run("deny carries status, reason, key and decision id", func(t *testing.T) {
		t.Parallel()
		d, err := DecisionFromResult(map[string]any{"allowed": false, "http_status": json.Number("403"),
			"reason": "no_grant", "reasons": []any{"no_grant"}, "key": "k1", "key_name": "View All Teams",
			"body": `{"reason":"no_grant","extra":1}`})
		if err != nil {
			t.Fatal(err)
		}
		resp := CheckResponse(d, "dec-2", nil)
		den := resp.GetDeniedResponse()
		if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) || den.GetStatus().GetCode() != 403 {
			t.Fatalf("status %v / %v", resp.GetStatus(), den.GetStatus())
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(den.GetBody()), &body); err != nil {
			t.Fatal(err)
		}
		if body["reason"] != "no_grant" || body["key"] != "k1" || body["decision_id"] != "dec-2" || body["extra"] != 1.0 {
			t.Fatalf("body %v", body)
		}
	})
	t.Run("unauthenticated is 401", func(t *testing.T) {
		t.Parallel()
		resp := CheckResponse(Deny(401, ReasonInvalidToken), "d", nil)
		if resp.GetStatus().GetCode() != int32(code.Code_UNAUTHENTICATED) || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
			t.Fatalf("got %v", resp)
		}
	})
	t.Run("malformed result is an error", func(t *testing.T) {
		t.Parallel()
		if _, err := DecisionFromResult(map[string]any{"allowed": "yes"}); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestMetricReason(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": ReasonNone, "no_grant": "no_grant", "made_up": ReasonOther} {
		if got := MetricReason(in); got != want {
			t.Errorf("MetricReason(%q) = %q, want %q", in, got, want)
		}
	}
}
