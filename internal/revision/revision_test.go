package revision

import "testing"

func TestParseAndFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Revision
		bad  bool
	}{
		{in: "42-0a1b", want: Revision{42, "0a1b"}},
		{in: "0-ff", want: Revision{0, "ff"}},
		{in: "0a1b2c", want: Revision{0, "0a1b2c"}},
		{in: "", bad: true},
		{in: "-ff", bad: true},
		{in: "007-ff", bad: true},
		{in: "x-ff", bad: true},
		{in: "1-", bad: true},
		{in: "1-FF", bad: true},
		{in: "18446744073709551616-ff", bad: true},
	} {
		got, err := Parse(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if tc.in != tc.want.Hash && got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func TestOlder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		candidate, active string
		older             bool
	}{
		{"5-aa", "", false},
		{"5-aa", "6-bb", true},
		{"6-aa", "6-bb", false},
		{"7-aa", "6-bb", false},
		{"aa", "6-bb", true},
		{"garbage!", "6-bb", true},
		{"6-bb", "garbage!", false},
		{"10-aa", "9-bb", false}, // numeric, not lexicographic
	} {
		if got := Older(tc.candidate, tc.active); got != tc.older {
			t.Errorf("Older(%q, %q) = %v, want %v", tc.candidate, tc.active, got, tc.older)
		}
	}
}
