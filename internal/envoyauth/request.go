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

// Errors of NewRequest and NormalizePath; ReasonOf names each one's reason code.
var (
	// ErrInvalidPath rejects paths that could mean different things to the authorizer and the upstream.
	ErrInvalidPath = errors.New("invalid path")
	// ErrPathTooLong rejects a path over Options.MaxPathBytes or Options.MaxPathSegments.
	ErrPathTooLong = errors.New("path too long")
	// ErrAmbiguous rejects a request that could mean two things to keygate and the upstream.
	ErrAmbiguous = errors.New("ambiguous request")
)

// ReasonOf is the reason code of a NewRequest error: invalid_path, path_too_long or ambiguous_request.
func ReasonOf(err error) string {
	switch {
	case errors.Is(err, ErrPathTooLong):
		return ReasonPathTooLong
	case errors.Is(err, ErrAmbiguous):
		return ReasonAmbiguousRequest
	default:
		return ReasonInvalidPath
	}
}

// Default limits of Options. The identity route table's longest route has 7 segments and 53 bytes; common
// proxies refuse request lines over about 8 KiB (nginx's large_client_header_buffers 8k, Apache's
// LimitRequestLine 8190), so no request a proxy in front passes is refused here for its length alone.
const (
	DefaultMaxPathBytes    = 8192
	DefaultMaxPathSegments = 64
)

// Options bound and shape what NewRequest accepts. The zero value is the defaults.
type Options struct {
	// MaxPathBytes bounds the :path (query included) in bytes. 0 = DefaultMaxPathBytes.
	MaxPathBytes int
	// MaxPathSegments bounds the number of path segments. 0 = DefaultMaxPathSegments.
	MaxPathSegments int
	// RemoveMethodOverride lists method-override headers in Request.MethodOverrides (to remove on allow)
	// instead of refusing the request as ambiguous.
	RemoveMethodOverride bool
}

func (o Options) limits() (maxBytes, maxSegments int) {
	maxBytes, maxSegments = o.MaxPathBytes, o.MaxPathSegments
	if maxBytes <= 0 {
		maxBytes = DefaultMaxPathBytes
	}
	if maxSegments <= 0 {
		maxSegments = DefaultMaxPathSegments
	}
	return maxBytes, maxSegments
}

// Method-override headers: frameworks (Rails, Express's method-override, Symfony, ASP.NET) route a request
// by them instead of its method, so keygate would decide on GET what the upstream runs as DELETE.
var methodOverrides = map[string]bool{"x-http-method-override": true, "x-http-method": true, "x-method-override": true}

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
	// MethodOverrides are the method-override header names present (lowercase), to remove on allow; only
	// with Options.RemoveMethodOverride (otherwise such a request is ErrAmbiguous).
	MethodOverrides []string
	// Authorization is the Authorization header (kept out of the input document).
	Authorization string

	req      *authv3.CheckRequest
	rawQuery string
	query    url.Values
	identity *Identity
	input    ast.Value
}

// NewRequest is Options{}.NewRequest: the default limits, method overrides refused.
func NewRequest(req *authv3.CheckRequest) (*Request, error) { return Options{}.NewRequest(req) }

// NewRequest reads what a decision needs from a CheckRequest and validates it, in this order:
//
//   - ErrPathTooLong: the :path is over MaxPathBytes, or has more than MaxPathSegments segments (checked
//     before anything proportional to the path is allocated);
//   - ErrAmbiguous: a header keygate decides on (Authorization, X-Current-Orgid, Layer5-Current-Orgid)
//     appears twice in header_map (whatever the case), as two case variants in the headers map, or with a
//     "," (two values joined, as Envoy joins a repeated header in the headers map), any two
//     names of the headers map differ only in case, both headers and header_map are set, X-Current-Orgid and
//     Layer5-Current-Orgid are both set and differ, or a method-override header is present (unless
//     RemoveMethodOverride);
//   - ErrInvalidPath: see NormalizePath, or a malformed query.
//
// The full input document (opa-envoy-plugin shape) is built only when Input is called. On an error the
// request is still returned, with the path fields empty.
func (o Options) NewRequest(req *authv3.CheckRequest) (*Request, error) {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	r := &Request{Method: h.GetMethod(), Service: attrs.GetContextExtensions()["service"], req: req}
	maxBytes, _ := o.limits()
	if len(h.GetPath()) > maxBytes {
		return r, ErrPathTooLong
	}
	pathOnly, rawQuery, _ := strings.Cut(h.GetPath(), "?")
	if i := strings.IndexByte(pathOnly, '#'); i >= 0 {
		pathOnly = pathOnly[:i]
	}
	if err := o.checkSegments(pathOnly); err != nil {
		return r, err
	}

	var xOrg, l5Org string
	var nAuth, nX, nL5 int
	visit := func(k, v string) {
		k = lower(k)
		switch {
		case k == "authorization":
			nAuth++
			r.Authorization = v
		case strings.HasPrefix(k, HeaderPrefix):
			r.Spoofed = append(r.Spoofed, k)
		case k == "x-current-orgid":
			nX++
			xOrg = v
		case k == "layer5-current-orgid":
			nL5++
			l5Org = v
		case methodOverrides[k]:
			r.MethodOverrides = append(r.MethodOverrides, k)
		}
	}
	eachHeader(h, visit)
	switch {
	case nAuth > 1 || nX > 1 || nL5 > 1:
		return r, ErrAmbiguous
	case len(h.GetHeaders()) > 0 && len(h.GetHeaderMap().GetHeaders()) > 0:
		return r, ErrAmbiguous
	case caseVariants(h.GetHeaders()):
		return r, ErrAmbiguous
	case xOrg != "" && l5Org != "" && xOrg != l5Org:
		return r, ErrAmbiguous
	case strings.IndexByte(r.Authorization, ',') >= 0 || strings.IndexByte(xOrg, ',') >= 0 ||
		strings.IndexByte(l5Org, ',') >= 0:
		// Envoy joins a repeated header's values with "," in the headers map; no token or org id has one.
		return r, ErrAmbiguous
	case len(r.MethodOverrides) > 0 && !o.RemoveMethodOverride:
		return r, ErrAmbiguous
	}
	r.OrgHeader = xOrg
	if r.OrgHeader == "" {
		r.OrgHeader = l5Org
	}

	decoded, segments, err := o.NormalizePath(pathOnly)
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

// checkSegments refuses a path with more than MaxPathSegments segments, counting without allocating.
func (o Options) checkSegments(path string) error {
	_, maxSegments := o.limits()
	if strings.Count(path, "/") > maxSegments {
		return ErrPathTooLong
	}
	return nil
}

// caseVariants reports whether two names of a headers map differ only in case ("X-Current-Orgid" and
// "x-current-orgid"): the input document lowercases names, so one of the values would win by map order.
// Envoy sends lowercase names, so the set is allocated only for a map that has an uppercase name.
func caseVariants(headers map[string]string) bool {
	var seen map[string]struct{}
	for k := range headers {
		lk := lower(k)
		if lk == k {
			continue
		}
		if _, ok := headers[lk]; ok {
			return true
		}
		if seen == nil {
			seen = map[string]struct{}{}
		}
		if _, ok := seen[lk]; ok {
			return true
		}
		seen[lk] = struct{}{}
	}
	return false
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

// NormalizePath is Options{}.NormalizePath (the default limits).
func NormalizePath(raw string) (string, []string, error) { return Options{}.NormalizePath(raw) }

// NormalizePath checks a raw request path (no query) and returns it percent-decoded with its segments
// (without the leading empty one). A path over MaxPathBytes or MaxPathSegments is ErrPathTooLong, refused
// before anything proportional to it is allocated. Rejected with ErrInvalidPath: a path not starting with
// "/", empty segments ("//"), "." and ".." segments, backslashes, percent-encoded dots, slashes, backslashes
// and percent signs (%2e, %2f, %5c, %25: decoded once, %25 makes another escape that an upstream decoding
// twice would read differently), malformed escapes and control characters. A trailing slash is kept as an
// empty last segment. The result normalises to itself.
func (o Options) NormalizePath(raw string) (string, []string, error) {
	if maxBytes, _ := o.limits(); len(raw) > maxBytes {
		return "", nil, ErrPathTooLong
	}
	if err := o.checkSegments(raw); err != nil {
		return "", nil, err
	}
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
			case "2e", "2f", "5c", "25":
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
