package envoyauth

import (
	"errors"
	"net/url"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/structpb"
)

// HeaderPrefix is the prefix of the identity headers keygate sets for the upstream. Client-sent headers
// with this prefix are never trusted: they are left out of the input and removed from the request.
const HeaderPrefix = "x-keygate-"

// Identity is the verified subject of a request.
type Identity struct {
	User  string // sub
	Token string // jti ("" when the token has none)
}

// ErrInvalidPath rejects paths that could mean different things to the authorizer and the upstream.
var ErrInvalidPath = errors.New("invalid path")

// Request is a CheckRequest prepared for evaluation.
type Request struct {
	Method  string
	Path    string    // the decoded path, without query
	Input   ast.Value // the Rego input document (without identity until WithIdentity)
	Spoofed []string  // client-sent x-keygate-* header names, to remove on allow
	// Authorization is the Authorization header value (not copied into Input).
	Authorization string

	obj ast.Object
}

// NewRequest translates req into the input document of data.keygate.envoy.response (opa-envoy-plugin
// shape): attributes.request.http.{method,path,host,scheme,headers}, attributes.context_extensions,
// attributes.metadata_context, parsed_path, parsed_query. The authorization header and client-sent
// x-keygate-* headers are left out of the input. A path that does not normalise returns ErrInvalidPath
// (with a Request still carrying the method and spoofed headers).
func NewRequest(req *authv3.CheckRequest) (*Request, error) {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	r := &Request{Method: h.GetMethod()}

	headers := h.GetHeaders()
	hdrTerms := make([][2]*ast.Term, 0, len(headers))
	add := func(k, v string) {
		k = lower(k)
		switch {
		case k == "authorization":
			r.Authorization = v
		case strings.HasPrefix(k, HeaderPrefix):
			r.Spoofed = append(r.Spoofed, k)
		default:
			hdrTerms = append(hdrTerms, ast.Item(ast.InternedTerm(k), ast.StringTerm(v)))
		}
	}
	if len(headers) > 0 {
		for k, v := range headers {
			add(k, v)
		}
	} else {
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			v := hv.GetValue()
			if v == "" {
				v = string(hv.GetRawValue())
			}
			add(hv.GetKey(), v)
		}
	}

	rawPath := h.GetPath()
	pathOnly, rawQuery, _ := strings.Cut(rawPath, "?")
	if i := strings.IndexByte(pathOnly, '#'); i >= 0 {
		pathOnly = pathOnly[:i]
	}

	httpObj := ast.NewObjectWithCapacity(6)
	httpObj.Insert(ast.InternedTerm("method"), ast.StringTerm(r.Method))
	httpObj.Insert(ast.InternedTerm("path"), ast.StringTerm(rawPath))
	if v := h.GetHost(); v != "" {
		httpObj.Insert(ast.InternedTerm("host"), ast.StringTerm(v))
	}
	if v := h.GetScheme(); v != "" {
		httpObj.Insert(ast.InternedTerm("scheme"), ast.StringTerm(v))
	}
	httpObj.Insert(ast.InternedTerm("headers"), ast.ObjectTerm(hdrTerms...))

	ctxExt := attrs.GetContextExtensions()
	extTerms := make([][2]*ast.Term, 0, len(ctxExt))
	for k, v := range ctxExt {
		extTerms = append(extTerms, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
	}

	attrObj := ast.NewObjectWithCapacity(3)
	attrObj.Insert(ast.InternedTerm("request"), ast.ObjectTerm(ast.Item(ast.InternedTerm("http"), ast.NewTerm(httpObj))))
	attrObj.Insert(ast.InternedTerm("context_extensions"), ast.ObjectTerm(extTerms...))
	if md := attrs.GetMetadataContext().GetFilterMetadata(); len(md) > 0 {
		fm := make([][2]*ast.Term, 0, len(md))
		for ns, s := range md {
			fm = append(fm, ast.Item(ast.StringTerm(ns), structTerm(s)))
		}
		attrObj.Insert(ast.InternedTerm("metadata_context"),
			ast.ObjectTerm(ast.Item(ast.InternedTerm("filter_metadata"), ast.ObjectTerm(fm...))))
	}

	r.obj = ast.NewObjectWithCapacity(5)
	r.obj.Insert(ast.InternedTerm("attributes"), ast.NewTerm(attrObj))
	r.Input = r.obj

	decoded, segments, err := NormalizePath(pathOnly)
	if err != nil {
		return r, err
	}
	r.Path = decoded
	segTerms := make([]*ast.Term, len(segments))
	for i, s := range segments {
		segTerms[i] = ast.StringTerm(s)
	}
	r.obj.Insert(ast.InternedTerm("parsed_path"), ast.ArrayTerm(segTerms...))

	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return r, ErrInvalidPath
	}
	qTerms := make([][2]*ast.Term, 0, len(q))
	for k, vs := range q {
		vt := make([]*ast.Term, len(vs))
		for i, v := range vs {
			vt[i] = ast.StringTerm(v)
		}
		qTerms = append(qTerms, ast.Item(ast.StringTerm(k), ast.ArrayTerm(vt...)))
	}
	r.obj.Insert(ast.InternedTerm("parsed_query"), ast.ObjectTerm(qTerms...))
	return r, nil
}

// WithIdentity adds input.identity = {"user": id.User, "token": id.Token} (token only when set).
func (r *Request) WithIdentity(id Identity) {
	items := make([][2]*ast.Term, 0, 2)
	items = append(items, ast.Item(ast.InternedTerm("user"), ast.StringTerm(id.User)))
	if id.Token != "" {
		items = append(items, ast.Item(ast.InternedTerm("token"), ast.StringTerm(id.Token)))
	}
	r.obj.Insert(ast.InternedTerm("identity"), ast.ObjectTerm(items...))
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// NormalizePath checks a raw request path (no query) and returns it percent-decoded with its segments
// (without the leading empty one). Rejected with ErrInvalidPath: a path not starting with "/", empty
// segments ("//"), "." and ".." segments, backslashes, percent-encoded dots, slashes and backslashes
// (%2e, %2f, %5c), malformed escapes and control characters.
func NormalizePath(raw string) (string, []string, error) {
	if raw == "" || raw[0] != '/' {
		return "", nil, ErrInvalidPath
	}
	needDecode := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '\\' || c < 0x20 || c == 0x7f:
			return "", nil, ErrInvalidPath
		case c == '%':
			if i+2 >= len(raw) {
				return "", nil, ErrInvalidPath
			}
			switch lower(raw[i+1 : i+3]) {
			case "2e", "2f", "5c":
				return "", nil, ErrInvalidPath
			}
			needDecode = true
		}
	}
	rest := raw[1:]
	n := strings.Count(rest, "/") + 1
	segments := make([]string, 0, n)
	for i := 0; i < n; i++ {
		seg, tail, more := strings.Cut(rest, "/")
		rest = tail
		if seg == "." || seg == ".." || (seg == "" && more) {
			return "", nil, ErrInvalidPath
		}
		if needDecode && strings.IndexByte(seg, '%') >= 0 {
			d, err := url.PathUnescape(seg)
			if err != nil {
				return "", nil, ErrInvalidPath
			}
			for j := 0; j < len(d); j++ {
				if d[j] < 0x20 || d[j] == 0x7f {
					return "", nil, ErrInvalidPath
				}
			}
			seg = d
		}
		segments = append(segments, seg)
	}
	if !needDecode {
		return raw, segments, nil
	}
	return "/" + strings.Join(segments, "/"), segments, nil
}

func structTerm(s *structpb.Struct) *ast.Term {
	items := make([][2]*ast.Term, 0, len(s.GetFields()))
	for k, v := range s.GetFields() {
		items = append(items, ast.Item(ast.StringTerm(k), valueTerm(v)))
	}
	return ast.ObjectTerm(items...)
}

func valueTerm(v *structpb.Value) *ast.Term {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return ast.StringTerm(k.StringValue)
	case *structpb.Value_NumberValue:
		return ast.FloatNumberTerm(k.NumberValue)
	case *structpb.Value_BoolValue:
		return ast.BooleanTerm(k.BoolValue)
	case *structpb.Value_StructValue:
		return structTerm(k.StructValue)
	case *structpb.Value_ListValue:
		vals := k.ListValue.GetValues()
		ts := make([]*ast.Term, len(vals))
		for i, e := range vals {
			ts[i] = valueTerm(e)
		}
		return ast.ArrayTerm(ts...)
	default:
		return ast.NullTerm()
	}
}

// MetadataIdentity reads the JWT payload Envoy's jwt_authn filter stored (payload_in_metadata: key) under
// metadata_context.filter_metadata[namespace]: sub is the user, jti the token.
func MetadataIdentity(req *authv3.CheckRequest, namespace, key string) (Identity, bool) {
	ns := req.GetAttributes().GetMetadataContext().GetFilterMetadata()[namespace]
	payload := ns.GetFields()[key].GetStructValue()
	sub := payload.GetFields()["sub"].GetStringValue()
	if sub == "" {
		return Identity{}, false
	}
	return Identity{User: sub, Token: payload.GetFields()["jti"].GetStringValue()}, true
}
