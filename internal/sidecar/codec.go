package sidecar

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec this one wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// A Check's request reaches the handler as bytes: gRPC's proto codec would refuse some CheckRequests before
// any handler runs (invalid UTF-8 in a proto3 string, bad wire format, nesting past protobuf-go's recursion
// limit) with an INTERNAL error, which Envoy's failure_mode_allow: true would let through. The sidecar decodes
// them itself and answers every one of them: a denial (malformed_request, request_too_large) when it cannot.

// checkRecursionLimit bounds the nesting of a CheckRequest while decoding. A CheckRequest's own fields nest
// 6 messages deep; each JSON object level of filter metadata costs 3 (Struct, map entry, Value) and each
// list level 2, so 100 leaves room for metadata objects nested 31 deep (lists 46). jwt_authn payloads nest a
// few levels.
const checkRecursionLimit = 100

var checkUnmarshal = proto.UnmarshalOptions{RecursionLimit: checkRecursionLimit, DiscardUnknown: true}

// rawCheck is the undecoded bytes of a CheckRequest.
type rawCheck struct{ data []byte }

// checkCodec is the server's codec: it hands a Check's request over as bytes (rawCheck) and is gRPC's proto
// codec for everything else (health, reflection, every response).
type checkCodec struct{ proto encoding.CodecV2 }

func newCheckCodec() checkCodec { return checkCodec{proto: encoding.GetCodecV2("proto")} }

func (c checkCodec) Name() string { return "proto" }

func (c checkCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c checkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawCheck); ok {
		r.data = data.Materialize() // a copy: gRPC frees data's buffers after Unmarshal
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// checkServiceDesc is envoy.service.auth.v3.Authorization with a Check handler that receives rawCheck.
// Reflection still describes the service from its registered file (Metadata).
var checkServiceDesc = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Metadata:    authv3.Authorization_ServiceDesc.Metadata,
}

func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	var raw rawCheck
	if err := dec(&raw); err != nil {
		return nil, err // a transport failure (checkCodec never fails on rawCheck)
	}
	s := srv.(*Sidecar)
	if interceptor == nil {
		return s.checkBytes(ctx, raw.data), nil
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, &raw, info, func(ctx context.Context, req any) (any, error) {
		return s.checkBytes(ctx, req.(*rawCheck).data), nil
	})
}
