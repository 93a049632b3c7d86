// Package revision names a bundle's content and orders it against every other revision from the same source.
//
// A revision is "POSITION-HASH": POSITION is the source's commit position the data was read at (a decimal
// uint64 that grows with every committed change; 0 when the source has no position, e.g. a seed file), HASH the
// content hash of the data and policies. Two builds of the same data at the same position give the same
// revision, on any replica. A bare "HASH" (the first round's form) reads as position 0.
//
// Order is by position only: a client never activates a revision whose position is lower than its active
// one's. Equal positions with different hashes (the same data under other policies, or a seed file edited in
// place) are not ordered against each other and may replace each other.
package revision

import (
	"fmt"
	"strconv"
	"strings"
)

// Revision is a parsed revision.
type Revision struct {
	Position uint64
	Hash     string
}

// Format returns the revision string of a position and a content hash.
func Format(position uint64, hash string) string {
	return strconv.FormatUint(position, 10) + "-" + hash
}

// String is Format(r.Position, r.Hash).
func (r Revision) String() string { return Format(r.Position, r.Hash) }

// Parse reads "POSITION-HASH" or a bare "HASH" (position 0).
func Parse(s string) (Revision, error) {
	if s == "" {
		return Revision{}, fmt.Errorf("revision: empty")
	}
	pos, hash, ok := strings.Cut(s, "-")
	if !ok {
		return Revision{Hash: s}, validHash(s)
	}
	n, err := strconv.ParseUint(pos, 10, 64)
	if err != nil || (len(pos) > 1 && pos[0] == '0') {
		return Revision{}, fmt.Errorf("revision %q: position %q is not a decimal number", s, pos)
	}
	return Revision{Position: n, Hash: hash}, validHash(hash)
}

func validHash(h string) error {
	if h == "" {
		return fmt.Errorf("revision: empty content hash")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("revision: content hash %q is not lowercase hex", h)
		}
	}
	return nil
}

// Older reports whether candidate must not replace active: its position is lower. A revision that does not
// parse is older than everything (never activated over a good one).
func Older(candidate, active string) bool {
	if active == "" {
		return false
	}
	a, err := Parse(active)
	if err != nil {
		return false
	}
	c, err := Parse(candidate)
	if err != nil {
		return true
	}
	return c.Position < a.Position
}
