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
	Path    string // the decoded path, without query
	Service string // context_extensions["service"]
	// Segments are the decoded path segments (parsed_path).
	Segments []string
	// OrgHeader is X-Current-Orgid, else Layer5-Current-Orgid ("" when neither is set).
	OrgHeader string
	Spoofed   []string // client-sent x-keygate-* header names, to remove on allow
	// Authorization is the Authorization header (kept out of the input document).
	Authorization string

	req      *authv3.CheckRequest
	rawQuery string
	query    url.Values
	identity *Identity
	input    ast.Value
}

// NewRequest reads what a decision needs from a CheckRequest and validates the path. The full input document
// (opa-envoy-plugin shape) is built only when Input is called. On ErrInvalidPath the request is still returned,
// with the path fields empty.
func NewRequest(req *authv3.CheckRequest) (*Request, error) {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	r := &Request{Method: h.GetMethod(), Service: attrs.GetContextExtensions()["service"], req: req}
	var xOrg, l5Org string
	visit := func(k, v string) {
		k = lower(k)
		switch {
		case k == "authorization":
			r.Authorization = v
		case strings.HasPrefix(k, HeaderPrefix):
			r.Spoofed = append(r.Spoofed, k)
		case k == "x-current-orgid":
			xOrg = v
		case k == "layer5-current-orgid":
			l5Org = v
		}
	}
	eachHeader(h, visit)
	r.OrgHeader = xOrg
	if r.OrgHeader == "" {
		r.OrgHeader = l5Org
	}

	pathOnly, rawQuery, _ := strings.Cut(h.GetPath(), "?")
	if i := strings.IndexByte(pathOnly, '#'); i >= 0 {
		pathOnly = pathOnly[:i]
	}
	decoded, segments, err := NormalizePath(pathOnly)
	if err != nil {
		return r, err
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return r, ErrInvalidPath
	}
	r.Path, r.Segments, r.rawQuery, r.query = decoded, segments, rawQuery, q
	return r, nil
}

func eachHeader(h *authv3.AttributeContext_HttpRequest, visit func(k, v string)) {
	if headers := h.GetHeaders(); len(headers) > 0 {
		for k, v := range headers {
			visit(k, v)
		}
		return
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		visit(hv.GetKey(), v)
	}
}

// Input returns the Rego input document: attributes (request.http with lowercase headers, without
// Authorization and client-sent x-keygate-* headers; context_extensions; metadata_context), parsed_path,
// parsed_query and, after WithIdentity, identity. Built once.
func (r *Request) Input() ast.Value {
	if r.input != nil {
		return r.input
	}
	attrs := r.req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	hdrTerms := make([][2]*ast.Term, 0, 8)
	eachHeader(h, func(k, v string) {
		k = lower(k)
		if k != "authorization" && !strings.HasPrefix(k, HeaderPrefix) {
			hdrTerms = append(hdrTerms, ast.Item(ast.InternedTerm(k), ast.StringTerm(v)))
		}
	})
	httpObj := ast.NewObjectWithCapacity(6)
	httpObj.Insert(ast.InternedTerm("method"), ast.StringTerm(r.Method))
	httpObj.Insert(ast.InternedTerm("path"), ast.StringTerm(h.GetPath()))
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

	obj := ast.NewObjectWithCapacity(5)
	obj.Insert(ast.InternedTerm("attributes"), ast.NewTerm(attrObj))
	if r.Segments != nil {
		segTerms := make([]*ast.Term, len(r.Segments))
		for i, s := range r.Segments {
			segTerms[i] = ast.StringTerm(s)
		}
		obj.Insert(ast.InternedTerm("parsed_path"), ast.ArrayTerm(segTerms...))
		qTerms := make([][2]*ast.Term, 0, len(r.query))
		for k, vs := range r.query {
			vt := make([]*ast.Term, len(vs))
			for i, v := range vs {
				vt[i] = ast.StringTerm(v)
			}
			qTerms = append(qTerms, ast.Item(ast.StringTerm(k), ast.ArrayTerm(vt...)))
		}
		obj.Insert(ast.InternedTerm("parsed_query"), ast.ObjectTerm(qTerms...))
	}
	if id := r.identity; id != nil {
		items := make([][2]*ast.Term, 0, 2)
		items = append(items, ast.Item(ast.InternedTerm("user"), ast.StringTerm(id.User)))
		if id.Token != "" {
			items = append(items, ast.Item(ast.InternedTerm("token"), ast.StringTerm(id.Token)))
		}
		obj.Insert(ast.InternedTerm("identity"), ast.ObjectTerm(items...))
	}
	r.input = obj
	return obj
}

// WithIdentity sets input.identity = {"user": id.User, "token": id.Token} (token only when set).
func (r *Request) WithIdentity(id Identity) {
	r.identity = &id
	r.input = nil
}

// Identity returns the identity set by WithIdentity, if any.
func (r *Request) Identity() (Identity, bool) {
	if r.identity == nil {
		return Identity{}, false
	}
	return *r.identity, true
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
