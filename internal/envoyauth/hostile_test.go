package envoyauth

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestNormalizePathLimits: a path over the byte or segment limit is ErrPathTooLong whatever else is wrong
// with it; at the limits it is normalised as usual; %25 (an escape that decodes to another escape) is invalid.
func TestNormalizePathLimits(t *testing.T) {
	t.Parallel()
	o := Options{MaxPathBytes: 64, MaxPathSegments: 4}
	cases := []struct {
		name, in string
		err      error
	}{
		{"at the byte limit", "/" + strings.Repeat("a", 63), nil},
		{"over the byte limit", "/" + strings.Repeat("a", 64), ErrPathTooLong},
		{"over the byte limit and invalid", "//" + strings.Repeat(".", 63), ErrPathTooLong},
		{"at the segment limit", "/a/b/c/d", nil},
		{"at the segment limit with a trailing slash", "/a/b/c/", nil},
		{"over the segment limit", "/a/b/c/d/e", ErrPathTooLong},
		{"over the segment limit by a trailing slash", "/a/b/c/d/", ErrPathTooLong},
		{"over the segment limit with empty segments", "/////", ErrPathTooLong},
		{"encoded percent", "/a%2541", ErrInvalidPath},
		{"encoded percent, upper case", "/a%25%32%65", ErrInvalidPath},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := o.NormalizePath(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("NormalizePath(%q): %v, want %v", tc.in, err, tc.err)
			}
		})
	}
	// The defaults apply without Options.
	if _, _, err := NormalizePath(strings.Repeat("/a", DefaultMaxPathSegments+1)); !errors.Is(err, ErrPathTooLong) {
		t.Fatalf("default segment limit: %v", err)
	}
	if _, _, err := NormalizePath("/" + strings.Repeat("a", DefaultMaxPathBytes)); !errors.Is(err, ErrPathTooLong) {
		t.Fatalf("default byte limit: %v", err)
	}
}

// BenchmarkNewRequestLongPath: the 60 KB path of 30,000 segments (17.5 ms per Check before the limits) is
// refused in constant time.
func BenchmarkNewRequestLongPath(b *testing.B) {
	req := checkRequest("GET", strings.Repeat("/ab", 20000)+strings.Repeat("/a", 10000), nil)
	for b.Loop() {
		if _, err := NewRequest(req); !errors.Is(err, ErrPathTooLong) {
			b.Fatal(err)
		}
	}
}

func headerMapRequest(headers ...string) *authv3.CheckRequest {
	req := checkRequest("GET", "/api/orgs/o1/teams", nil)
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(headers); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: headers[i], RawValue: []byte(headers[i+1])})
	}
	req.Attributes.Request.Http.HeaderMap = hm
	return req
}

// TestNewRequestRefusesAmbiguity: what keygate decides on must have one reading; requests with two are
// ErrAmbiguous (ambiguous_request), and their unambiguous neighbours are accepted.
func TestNewRequestRefusesAmbiguity(t *testing.T) {
	t.Parallel()
	both := checkRequest("GET", "/api/orgs/o1/teams", map[string]string{"authorization": "Bearer a"})
	both.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer b"}}}
	cases := []struct {
		name      string
		req       *authv3.CheckRequest
		opts      Options
		ambiguous bool
		org       string
	}{
		{name: "two authorization in header_map", req: headerMapRequest("authorization", "Bearer a", "authorization", "Bearer b"), ambiguous: true},
		{name: "the same authorization twice", req: headerMapRequest("authorization", "Bearer a", "Authorization", "Bearer a"), ambiguous: true},
		{name: "two x-current-orgid in header_map", req: headerMapRequest("x-current-orgid", "o1", "X-Current-Orgid", "o2"), ambiguous: true},
		{name: "two layer5-current-orgid in header_map", req: headerMapRequest("layer5-current-orgid", "o1", "layer5-current-orgid", "o1"), ambiguous: true},
		{name: "repeated other headers in header_map are fine", req: headerMapRequest("accept", "a", "accept", "b", "x-current-orgid", "o1"), org: "o1"},
		{name: "case variants in the headers map", req: checkRequest("GET", "/a", map[string]string{"X-Current-Orgid": "o1", "x-current-orgid": "o2"}), ambiguous: true},
		{name: "two uppercase variants in the headers map", req: checkRequest("GET", "/a", map[string]string{"X-CURRENT-ORGID": "o1", "X-Current-Orgid": "o2"}), ambiguous: true},
		{name: "case variants of any header in the headers map", req: checkRequest("GET", "/a", map[string]string{"Accept": "a", "accept": "b"}), ambiguous: true},
		{name: "one uppercase name is fine", req: checkRequest("GET", "/a", map[string]string{"X-Current-Orgid": "o1", "Accept": "a"}), org: "o1"},
		{name: "headers and header_map both set", req: both, ambiguous: true},
		{name: "two authorization values joined by Envoy", req: checkRequest("GET", "/a", map[string]string{"authorization": "Bearer a,Bearer b"}), ambiguous: true},
		{name: "two org values joined by Envoy", req: checkRequest("GET", "/a", map[string]string{"x-current-orgid": "o1,o2"}), ambiguous: true},
		{name: "two layer5 org values joined by Envoy", req: checkRequest("GET", "/a", map[string]string{"layer5-current-orgid": "o1, o2"}), ambiguous: true},
		{name: "disagreeing org headers", req: checkRequest("GET", "/a", map[string]string{"x-current-orgid": "o1", "layer5-current-orgid": "o2"}), ambiguous: true},
		{name: "agreeing org headers", req: checkRequest("GET", "/a", map[string]string{"x-current-orgid": "o1", "layer5-current-orgid": "o1"}), org: "o1"},
		{name: "an empty x-current-orgid leaves layer5-current-orgid", req: checkRequest("GET", "/a", map[string]string{"x-current-orgid": "", "layer5-current-orgid": "o2"}), org: "o2"},
		{name: "x-http-method-override", req: checkRequest("GET", "/a", map[string]string{"x-http-method-override": "DELETE"}), ambiguous: true},
		{name: "X-HTTP-Method", req: checkRequest("GET", "/a", map[string]string{"X-HTTP-Method": "DELETE"}), ambiguous: true},
		{name: "x-method-override in header_map", req: headerMapRequest("x-method-override", "PUT"), ambiguous: true},
		{name: "an empty override header", req: checkRequest("GET", "/a", map[string]string{"x-http-method-override": ""}), ambiguous: true},
		{name: "override headers to remove", req: checkRequest("GET", "/a", map[string]string{"x-http-method-override": "DELETE"}), opts: Options{RemoveMethodOverride: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := tc.opts.NewRequest(tc.req)
			if tc.ambiguous {
				if !errors.Is(err, ErrAmbiguous) || ReasonOf(err) != ReasonAmbiguousRequest {
					t.Fatalf("err %v, want ErrAmbiguous", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.OrgHeader != tc.org {
				t.Fatalf("org %q, want %q", r.OrgHeader, tc.org)
			}
			if tc.opts.RemoveMethodOverride && !slices.Equal(r.MethodOverrides, []string{"x-http-method-override"}) {
				t.Fatalf("method overrides %v", r.MethodOverrides)
			}
		})
	}
}
