package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// rawBytes is a CheckRequest already encoded (possibly not one protobuf-go would encode: invalid UTF-8,
// truncated, nested too deep), sent as is by rawClientCodec.
type rawBytes []byte

// rawClientCodec sends rawBytes unchanged and decodes responses with the proto codec.
type rawClientCodec struct{}

func (rawClientCodec) Name() string { return "proto" }

func (rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(rawBytes); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

// checkRaw sends raw as a Check over conn.
func checkRaw(ctx context.Context, conn *grpc.ClientConn, raw []byte) (*authv3.CheckResponse, error) {
	resp := &authv3.CheckResponse{}
	err := conn.Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", rawBytes(raw), resp,
		grpc.ForceCodecV2(rawClientCodec{}), grpc.MaxCallSendMsgSize(1<<30))
	return resp, err
}

// marshalWith encodes req and then replaces every "PLACEHOLDER" in the bytes by bad (same length), so that
// a string field carries bytes protobuf-go would refuse to encode.
func marshalWith(t testing.TB, req *authv3.CheckRequest, bad string) []byte {
	t.Helper()
	if len(bad) != len("PLACEHOLDER") {
		t.Fatalf("replacement %q is not 11 bytes", bad)
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("PLACEHOLDER")) {
		t.Fatal("no placeholder in the request")
	}
	return bytes.ReplaceAll(b, []byte("PLACEHOLDER"), []byte(bad))
}

// deepStruct is a Struct nested depth times: {"a": {"a": ... {}}}.
func deepStruct(depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range depth {
		s = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStructValue(s)}}
	}
	return s
}

const invalidUTF8 = "bad\xff\xfe\xc3(\x80zzz" // 11 bytes, not UTF-8

// hostileRequests are CheckRequests, as bytes, that protobuf-go or gRPC refused before the handler ran (a
// gRPC error: under failure_mode_allow: true Envoy would let them through). Each must be an OK denial with
// the reason.
func hostileRequests(t testing.TB, tok string) []struct {
	name   string
	raw    []byte
	reason string
} {
	valid := func() *authv3.CheckRequest {
		return checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", map[string]string{"authorization": tok})
	}
	reqPath, reqMethod, reqName, reqValue, reqMap := valid(), valid(), valid(), valid(), valid()
	reqPath.Attributes.Request.Http.Path = "/api/identity/orgs/PLACEHOLDER/users"
	reqMethod.Attributes.Request.Http.Method = "PLACEHOLDER"
	reqName.Attributes.Request.Http.Headers["x-PLACEHOLDER"] = "v"
	reqValue.Attributes.Request.Http.Headers["x-current-orgid"] = "PLACEHOLDER"
	reqMap.Attributes.Request.Http.Headers = nil
	reqMap.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "authorization", Value: tok}, {Key: "x-current-orgid", Value: "PLACEHOLDER"}}}

	huge := valid()
	huge.Attributes.Request.Http.Headers["x-filler"] = strings.Repeat("a", 5<<20)
	deep := valid()
	deep.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"envoy.filters.http.jwt_authn": deepStruct(4000)}}
	deepRaw, err := proto.Marshal(deep)
	if err != nil {
		t.Fatal(err)
	}
	hugeRaw, err := proto.Marshal(huge)
	if err != nil {
		t.Fatal(err)
	}
	validRaw, err := proto.Marshal(valid())
	if err != nil {
		t.Fatal(err)
	}
	return []struct {
		name   string
		raw    []byte
		reason string
	}{
		{"invalid UTF-8 in the path", marshalWith(t, reqPath, invalidUTF8), "malformed_request"},
		{"invalid UTF-8 in the method", marshalWith(t, reqMethod, invalidUTF8), "malformed_request"},
		{"invalid UTF-8 in a header name", marshalWith(t, reqName, invalidUTF8), "malformed_request"},
		{"invalid UTF-8 in a header value", marshalWith(t, reqValue, invalidUTF8), "malformed_request"},
		{"invalid UTF-8 in a header_map value", marshalWith(t, reqMap, invalidUTF8), "malformed_request"},
		{"truncated message", validRaw[:len(validRaw)-3], "malformed_request"},
		{"not protobuf", []byte("\xff\xff\xff\xff\xff\xff"), "malformed_request"},
		{"over 4 MiB", hugeRaw, "request_too_large"},
		{"metadata nested 4000 deep", deepRaw, "malformed_request"},
	}
}

// TestHostileCheckRequestsAreDenied: every CheckRequest that protobuf-go or gRPC's limits refused (a gRPC
// error before the handler) is answered over the real gRPC connection with an OK response carrying a denial
// and its reason code.
func TestHostileCheckRequestsAreDenied(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{})
	conn := dial(t, f.s)
	tok := "Bearer " + f.dev.token(t, "u-alice", "tok-alice", time.Hour)
	for _, tc := range hostileRequests(t, tok) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := checkRaw(context.Background(), conn, tc.raw)
			if err != nil {
				t.Fatalf("Check returned a gRPC error (Envoy's failure mode would decide): %v", err)
			}
			assertDenied(t, resp, 403, tc.reason)
		})
	}
}

// assertDenied checks a denial's status, gRPC code and body reason.
func assertDenied(t testing.TB, resp *authv3.CheckResponse, status int, reason string) {
	t.Helper()
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		t.Fatalf("allowed: %v", resp)
	}
	denied := resp.GetDeniedResponse()
	if got := int(denied.GetStatus().GetCode()); got != status {
		t.Errorf("HTTP status %d, want %d", got, status)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil {
		t.Fatalf("body is not JSON: %q", denied.GetBody())
	}
	if body["reason"] != reason {
		t.Errorf("reason %v, want %s (body %s)", body["reason"], reason, denied.GetBody())
	}
}

// headerMapReq is a CheckRequest whose headers come in header_map (Envoy's encode_raw_headers shape, where a
// repeated header appears once per value) instead of the headers map.
func headerMapReq(method, path string, headers ...[2]string) *authv3.CheckRequest {
	req := checkReq(method, path, "identity", nil)
	hm := &corev3.HeaderMap{}
	for _, h := range headers {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
	}
	req.Attributes.Request.Http.HeaderMap = hm
	return req
}

// TestAmbiguousRequestsAreDenied: a request that could mean two things to keygate and the upstream (two
// identities, two orgs, a method override) is denied with ambiguous_request, never answered last-wins.
// Each case's unambiguous twin is allowed, so the denial is the ambiguity's.
func TestAmbiguousRequestsAreDenied(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{})
	alice := "Bearer " + f.dev.token(t, "u-alice", "tok-alice", time.Hour)
	heidi := "Bearer " + f.dev.token(t, "u-heidi", "tok-heidi", time.Hour)
	const users, profile = "/api/identity/orgs/org-layer5/users", "/api/identity/users/profile"
	cases := []struct {
		name       string
		ambiguous  *authv3.CheckRequest
		unambigous *authv3.CheckRequest
	}{
		{"two Authorization values in header_map",
			headerMapReq("GET", users, [2]string{"authorization", heidi}, [2]string{"authorization", alice}),
			headerMapReq("GET", users, [2]string{"authorization", alice})},
		{"two Authorization values, differently cased, in header_map",
			headerMapReq("GET", users, [2]string{"Authorization", heidi}, [2]string{"authorization", alice}),
			headerMapReq("GET", users, [2]string{"Authorization", alice})},
		{"two X-Current-Orgid values in header_map",
			headerMapReq("GET", profile, [2]string{"authorization", alice}, [2]string{"x-current-orgid", "org-meshery"},
				[2]string{"x-current-orgid", "org-layer5"}),
			headerMapReq("GET", profile, [2]string{"authorization", alice}, [2]string{"x-current-orgid", "org-layer5"})},
		{"case variants of the org header in the headers map",
			checkReq("GET", profile, "identity", map[string]string{"authorization": alice,
				"X-Current-Orgid": "org-meshery", "x-current-orgid": "org-layer5"}),
			checkReq("GET", profile, "identity", map[string]string{"authorization": alice, "X-Current-Orgid": "org-layer5"})},
		{"case variants of Authorization in the headers map",
			checkReq("GET", users, "identity", map[string]string{"Authorization": heidi, "authorization": alice}),
			checkReq("GET", users, "identity", map[string]string{"Authorization": alice})},
		{"Layer5-Current-Orgid disagrees with X-Current-Orgid",
			checkReq("GET", profile, "identity", map[string]string{"authorization": alice,
				"x-current-orgid": "org-layer5", "layer5-current-orgid": "org-meshery"}),
			checkReq("GET", profile, "identity", map[string]string{"authorization": alice,
				"x-current-orgid": "org-layer5", "layer5-current-orgid": "org-layer5"})},
		{"x-http-method-override",
			checkReq("GET", users, "identity", map[string]string{"authorization": alice, "x-http-method-override": "DELETE"}),
			checkReq("GET", users, "identity", map[string]string{"authorization": alice})},
		{"x-http-method",
			checkReq("GET", users, "identity", map[string]string{"authorization": alice, "x-http-method": "DELETE"}),
			checkReq("GET", users, "identity", map[string]string{"authorization": alice})},
		{"x-method-override in header_map",
			headerMapReq("GET", users, [2]string{"authorization", alice}, [2]string{"X-Method-Override", "DELETE"}),
			headerMapReq("GET", users, [2]string{"authorization", alice})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := f.c.Check(context.Background(), tc.ambiguous)
			if err != nil {
				t.Fatal(err)
			}
			assertDenied(t, resp, 403, "ambiguous_request")
			resp, err = f.c.Check(context.Background(), tc.unambigous)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetOkResponse() == nil {
				t.Fatalf("the unambiguous request is denied: %v", resp.GetDeniedResponse().GetBody())
			}
		})
	}
}

// TestMethodOverrideRemove: with method_override: remove, a request with x-http-method-override is decided on
// its real method and the override header is removed before the request goes upstream.
func TestMethodOverrideRemove(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{MethodOverride: MethodOverrideRemove})
	alice := "Bearer " + f.dev.token(t, "u-alice", "tok-alice", time.Hour)
	resp, err := f.c.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity",
		map[string]string{"authorization": alice, "X-HTTP-Method-Override": "DELETE", "x-method-override": "PUT"}))
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("denied: %v", resp.GetDeniedResponse().GetBody())
	}
	remove := ok.GetHeadersToRemove()
	for _, h := range []string{"x-http-method-override", "x-method-override"} {
		if !slices.Contains(remove, h) {
			t.Errorf("%s is not removed (headers_to_remove %v)", h, remove)
		}
	}
}

// TestLongPathsAreDenied: a path over the byte or segment limit is denied as path_too_long before it is
// matched, cheaply; a path at the limit is decided as usual.
func TestLongPathsAreDenied(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{})
	alice := "Bearer " + f.dev.token(t, "u-alice", "tok-alice", time.Hour)
	h := map[string]string{"authorization": alice}
	cases := []struct {
		name, path, reason string
	}{
		{"30,000 segments in 60 KB", strings.Repeat("/ab", 20000) + strings.Repeat("/a", 10000), "path_too_long"},
		{"one 64 KiB segment", "/x/" + longSegment(), "path_too_long"},
		{"65 segments", strings.Repeat("/a", 65), "path_too_long"},
		{"64 segments", strings.Repeat("/a", 64), "route_not_found"},
		{"a long query", "/api/identity/orgs/org-layer5/users?q=" + strings.Repeat("a", 9000), "path_too_long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := f.c.Check(context.Background(), checkReq("GET", tc.path, "identity", h))
			if err != nil {
				t.Fatal(err)
			}
			assertDenied(t, resp, 403, tc.reason)
		})
	}
}

// TestRequestSizeLimits: between max_request_bytes and max_receive_bytes a Check is denied as
// request_too_large; over max_receive_bytes gRPC refuses it (RESOURCE_EXHAUSTED, the documented transport
// limit that failure_mode_allow: false turns into Envoy's status_on_error).
func TestRequestSizeLimits(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{MaxRequestBytes: 4 << 10, MaxReceiveBytes: 16 << 10})
	conn := dial(t, f.s)
	alice := "Bearer " + f.dev.token(t, "u-alice", "tok-alice", time.Hour)
	sized := func(n int) *authv3.CheckRequest {
		return checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity",
			map[string]string{"authorization": alice, "x-filler": strings.Repeat("a", n)})
	}
	resp, err := f.c.Check(context.Background(), sized(2<<10))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("under the limit: %v %v", resp, err)
	}
	resp, err = f.c.Check(context.Background(), sized(8<<10))
	if err != nil {
		t.Fatal(err)
	}
	assertDenied(t, resp, 403, "request_too_large")
	raw, _ := proto.Marshal(sized(32 << 10))
	if _, err := checkRaw(context.Background(), conn, raw); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over max_receive_bytes: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// TestCodecKeepsHealthAndReflection: the server's codec hands only Check requests over as bytes; health and
// reflection (grpcurl) still work, and reflection still describes the Authorization service.
func TestCodecKeepsHealthAndReflection(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{})
	conn := dial(t, f.s)
	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{
		Service: authv3.Authorization_ServiceDesc.ServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", h, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: authv3.Authorization_ServiceDesc.ServiceName}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil || len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("reflection: %v %v", r, err)
	}
	_ = stream.CloseSend()
}

// TestConfigHostileLimits: the limits' defaults, and Validate naming each bad key.
func TestConfigHostileLimits(t *testing.T) {
	t.Parallel()
	base := func() Config {
		c := Config{Bundle: BundleConfig{File: "b.tar.gz"}, IdentityFromMetadata: true}
		return c
	}
	c := base()
	c.SetDefaults()
	if c.MaxRequestBytes != 1<<20 || c.MaxReceiveBytes != 16<<20 || c.MaxPathBytes != 8192 ||
		c.MaxPathSegments != 64 || c.MethodOverride != MethodOverrideDeny {
		t.Fatalf("defaults %d %d %d %d %q", c.MaxRequestBytes, c.MaxReceiveBytes, c.MaxPathBytes, c.MaxPathSegments,
			c.MethodOverride)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for key, edit := range map[string]func(*Config){
		"max_request_bytes": func(c *Config) { c.MaxRequestBytes = -1 },
		"max_receive_bytes": func(c *Config) { c.MaxRequestBytes, c.MaxReceiveBytes = 2<<20, 1<<20 },
		"max_path_bytes":    func(c *Config) { c.MaxPathBytes = -5 },
		"max_path_segments": func(c *Config) { c.MaxPathSegments = -1 },
		"method_override":   func(c *Config) { c.MethodOverride = "allow" },
	} {
		c := base()
		edit(&c)
		c.SetDefaults()
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: Validate() = %v", key, err)
		}
	}
}
