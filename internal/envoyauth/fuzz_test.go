package envoyauth

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzNormalizePath holds NormalizePath's invariants on arbitrary input, with the default and with small
// limits: an error is ErrInvalidPath or ErrPathTooLong (the latter only over a limit); an accepted path has
// 1..MaxPathSegments segments, none of them ".", "..", or empty except the last (a trailing slash), none with
// a "/", backslash, "%" or control character; the result is "/" + the segments joined, no longer than the
// input, equal to it when nothing was escaped, and normalising it again gives it back unchanged.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/", "/api/orgs/o1", "/a/b%20c", "//admin", "/a//b", "/a/./b", "/a/../b",
		"/a/..", "/a/%2e%2e/b", "/a/%2E%2E/b", "/a%2fb", "/a%5cb", "/a\\b", "a", "", "/a%zz", "/a%2", "/a%00",
		"/a%2541", "/%252e%252e/", "/a%3fb", "/a%23b", "/\xff\xfe", "/a%ff", strings.Repeat("/a", 65),
		"/" + strings.Repeat("a", 9000), "/a/b/c/d/e", "/a?b", "/%41%42"} {
		f.Add(s)
	}
	small := Options{MaxPathBytes: 64, MaxPathSegments: 4}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, o := range []Options{{}, small} {
			maxBytes, maxSegments := o.limits()
			got, segs, err := o.NormalizePath(raw)
			if err != nil {
				switch {
				case errors.Is(err, ErrPathTooLong):
					if len(raw) <= maxBytes && strings.Count(raw, "/") <= maxSegments {
						t.Fatalf("%q: path_too_long within the limits", raw)
					}
				case !errors.Is(err, ErrInvalidPath):
					t.Fatalf("%q: unexpected error %v", raw, err)
				}
				continue
			}
			if len(segs) == 0 || len(segs) > maxSegments {
				t.Fatalf("%q: %d segments", raw, len(segs))
			}
			for i, s := range segs {
				if s == "." || s == ".." || (s == "" && i != len(segs)-1) {
					t.Fatalf("%q: segment %d is %q (%q)", raw, i, s, segs)
				}
				if strings.ContainsAny(s, "/\\%") || strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
					t.Fatalf("%q: segment %d is %q", raw, i, s)
				}
			}
			if got != "/"+strings.Join(segs, "/") || len(got) > len(raw) {
				t.Fatalf("%q: result %q is not its segments %q", raw, got, segs)
			}
			if !strings.Contains(raw, "%") && got != raw {
				t.Fatalf("%q: unescaped path changed to %q", raw, got)
			}
			again, segs2, err := o.NormalizePath(got)
			if err != nil || again != got || !slices.Equal(segs, segs2) {
				t.Fatalf("%q: normalising %q again gives %q %q %v", raw, got, again, segs2, err)
			}
		}
	})
}
