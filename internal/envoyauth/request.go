package envoyauth

import (
	"errors"
	"net/url"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
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
