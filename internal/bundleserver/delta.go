package bundleserver

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/compiler"
)

// Delta modes (DeltaConfig.Mode).
const (
	DeltasAuto = "auto" // deltas when the bundles are unsigned
	DeltasOn   = "on"   // deltas even when the snapshots are signed (deltas carry no signature)
	DeltasOff  = "off"
)

// Defaults of DeltaConfig.
const (
	DefaultDeltaRetain   = 16
	DefaultDeltaMaxBytes = 512 << 20
)

// DeltaConfig configures delta bundles (OPA's format: a .manifest and a patch.json of upsert/remove
// operations on data.keygate.db).
//
// A client whose If-None-Match names a revision the server retains (its first etag: the client's active
// bundle), and which lists "delta" in its "Prefer: modes=" (every OPA does), gets the delta from that
// revision to the served one, unless the request's query says mode=snapshot or the delta would not be smaller
// than the snapshot. Everyone else gets the snapshot.
type DeltaConfig struct {
	// Mode is "auto" (default: deltas only when the server does not sign), "on" (deltas even when the snapshots
	// are signed: OPA cannot verify a delta, so a verifying client must set allow_unsigned_delta_bundles and
	// the channel must be authenticated, e.g. TLS to the bundle server) or "off".
	Mode string `yaml:"mode"`
	// Retain is how many revisions' data documents are kept as bases of deltas, the served one included.
	// Default 16.
	Retain int `yaml:"retain"`
	// MaxBytes bounds the retained documents' total size: the oldest go first; the served one always stays.
	// Default 512 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
}

func (c *DeltaConfig) setDefaults() {
	if c.Mode == "" {
		c.Mode = DeltasAuto
	}
	if c.Retain == 0 {
		c.Retain = DefaultDeltaRetain
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultDeltaMaxBytes
	}
}

func (c *DeltaConfig) validate() error {
	switch c.Mode {
	case DeltasAuto, DeltasOn, DeltasOff:
	default:
		return fmt.Errorf("deltas.mode: %q is not auto, on or off", c.Mode)
	}
	if c.Retain < 1 {
		return fmt.Errorf("deltas.retain: %d is less than 1", c.Retain)
	}
	if c.MaxBytes < 0 {
		return fmt.Errorf("deltas.max_bytes: %d is negative", c.MaxBytes)
	}
	return nil
}

// enabled reports whether deltas are served, given whether the snapshots are signed.
func (c *DeltaConfig) enabled(signed bool) bool {
	return c.Mode == DeltasOn || c.Mode == DeltasAuto && !signed
}

// history retains the data documents of the last revisions and the deltas computed from them to the served
// revision.
type history struct {
	retain   int
	maxBytes int64

	mu     sync.Mutex
	revs   []retainedRev          // oldest first; the served revision last
	size   int64                  // total len(doc)
	deltas map[string]*deltaEntry // base revision -> delta to the last revision
}

type retainedRev struct {
	revision string
	doc      []byte
}

type deltaEntry struct {
	once sync.Once
	data []byte
	err  error
}

func newHistory(c DeltaConfig) *history {
	return &history{retain: c.Retain, maxBytes: c.MaxBytes, deltas: map[string]*deltaEntry{}}
}

// add makes revision the last one and evicts the oldest beyond the bounds.
func (h *history) add(revision string, doc []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, r := range h.revs {
		if r.revision == revision { // the served revision again (a rollback to a retained one): move it last
			h.revs = append(h.revs[:i], h.revs[i+1:]...)
			h.size -= int64(len(r.doc))
			break
		}
	}
	h.revs = append(h.revs, retainedRev{revision: revision, doc: doc})
	h.size += int64(len(doc))
	for len(h.revs) > 1 && (len(h.revs) > h.retain || h.size > h.maxBytes) {
		h.size -= int64(len(h.revs[0].doc))
		h.revs[0] = retainedRev{}
		h.revs = h.revs[1:]
	}
	h.deltas = map[string]*deltaEntry{}
}

// stats returns the number of retained revisions and their documents' total size.
func (h *history) stats() (int, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.revs), h.size
}

// delta returns the delta bundle from base to target, computing it once per (base, target) while target is
// the last revision. ok is false when either is not retained or target is no longer the last one.
func (h *history) delta(base, target string, build func(old, new []byte) ([]byte, error)) (data []byte, ok bool, err error) {
	h.mu.Lock()
	n := len(h.revs)
	if n == 0 || h.revs[n-1].revision != target || base == target {
		h.mu.Unlock()
		return nil, false, nil
	}
	var old []byte
	for _, r := range h.revs[:n-1] {
		if r.revision == base {
			old = r.doc
		}
	}
	if old == nil {
		h.mu.Unlock()
		return nil, false, nil
	}
	newDoc := h.revs[n-1].doc
	e := h.deltas[base]
	if e == nil {
		e = &deltaEntry{}
		h.deltas[base] = e
	}
	h.mu.Unlock()
	e.once.Do(func() { e.data, e.err = build(old, newDoc) })
	return e.data, e.err == nil, e.err
}

// acceptsDelta reports whether the request lets the server answer with a delta: OPA's
// "Prefer: modes=snapshot,delta" and no "mode=snapshot" in the query.
func acceptsDelta(r *http.Request) bool {
	if r.URL.Query().Get("mode") == "snapshot" {
		return false
	}
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.FieldsFunc(v, func(c rune) bool { return c == ';' || c == ' ' }) {
			if modes, ok := strings.CutPrefix(p, "modes="); ok {
				for _, m := range strings.Split(modes, ",") {
					if m == "delta" {
						return true
					}
				}
			}
		}
	}
	return false
}

// baseRevision is the revision of the client's active bundle: the first etag of If-None-Match (OPA lists its
// current etag first, then superseded ones), unquoted.
func baseRevision(inm string) string {
	first, _, _ := strings.Cut(inm, ",")
	first = strings.TrimPrefix(strings.TrimSpace(first), "W/")
	return strings.Trim(first, `"`)
}

// deltaFor returns the delta bundle to send instead of b's snapshot, or nil.
func (s *Server) deltaFor(r *http.Request, b *served) []byte {
	if s.history == nil || !acceptsDelta(r) {
		return nil
	}
	base := baseRevision(r.Header.Get("If-None-Match"))
	if base == "" {
		return nil
	}
	start := time.Now()
	data, ok, err := s.history.delta(base, b.revision, func(old, new []byte) ([]byte, error) {
		ops, err := compiler.Diff(old, new)
		if err != nil {
			return nil, err
		}
		d, err := compiler.DeltaBundle(b.revision, ops, new)
		if err == nil {
			s.metrics.deltaDuration.Observe(time.Since(start).Seconds())
			s.logger.Debug("delta computed", "from", base, "to", b.revision, "operations", len(ops),
				"bytes", len(d), "duration", time.Since(start))
		}
		return d, err
	})
	if err != nil {
		s.logger.Error("computing a delta bundle; sending the snapshot", "from", base, "to", b.revision, "error", err)
		return nil
	}
	if !ok || len(data) >= len(b.data) {
		return nil
	}
	return data
}
