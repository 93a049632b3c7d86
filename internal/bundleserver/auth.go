package bundleserver

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// authenticator checks bearer tokens (compared as SHA-256 digests in constant time, so neither a
// token's bytes nor its length leak through timing) and verified client certificates.
//
// Token files are re-read when their modification time or size changes (looked at most every
// tokenFileCheck, on a request): a rotation edits the file, no restart. A file that no longer reads or
// parses keeps the tokens it had.
type authenticator struct {
	static        [][sha256.Size]byte // Config.Auth.Tokens
	files         []string
	clientCerts   bool // a client CA is configured: a verified chain authenticates
	publicMetrics bool

	tokens    atomic.Pointer[[][sha256.Size]byte] // static + the files' tokens
	mu        sync.Mutex                          // one reload at a time
	stamps    []string                            // per file, at the last load
	fileToks  [][][sha256.Size]byte               // per file, the last good tokens
	lastCheck atomic.Int64                        // unix nanoseconds
}

// tokenFileCheck is how often (at most) the token files' modification times are looked at.
const tokenFileCheck = 5 * time.Second

func newAuthenticator(cfg Config) (*authenticator, error) {
	a := &authenticator{files: cfg.Auth.TokenFiles, clientCerts: cfg.TLS.MutualTLS(), publicMetrics: cfg.Auth.PublicMetrics}
	for _, t := range cfg.Auth.Tokens {
		a.static = append(a.static, sha256.Sum256([]byte(t)))
	}
	a.stamps = make([]string, len(a.files))
	a.fileToks = make([][][sha256.Size]byte, len(a.files))
	for i, f := range a.files {
		stamp, toks, err := loadTokenFile(f)
		if err != nil {
			return nil, fmt.Errorf("auth.token_files: %w", err)
		}
		a.stamps[i], a.fileToks[i] = stamp, toks
	}
	a.publish()
	a.lastCheck.Store(time.Now().UnixNano())
	return a, nil
}

func (a *authenticator) publish() {
	all := append([][sha256.Size]byte(nil), a.static...)
	for _, toks := range a.fileToks {
		all = append(all, toks...)
	}
	a.tokens.Store(&all)
}

// reload re-reads the token files that changed, at most every tokenFileCheck.
func (a *authenticator) reload() {
	now := time.Now().UnixNano()
	last := a.lastCheck.Load()
	if len(a.files) == 0 || now-last < int64(tokenFileCheck) || !a.lastCheck.CompareAndSwap(last, now) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	for i, f := range a.files {
		if stamp, err := fileStamp(f); err != nil || stamp == a.stamps[i] {
			continue
		}
		stamp, toks, err := loadTokenFile(f)
		if err != nil {
			continue // keep the last good tokens of this file
		}
		a.stamps[i], a.fileToks[i], changed = stamp, toks, true
	}
	if changed {
		a.publish()
	}
}

func fileStamp(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size()), nil
}

func loadTokenFile(path string) (string, [][sha256.Size]byte, error) {
	stamp, err := fileStamp(path)
	if err != nil {
		return "", nil, err
	}
	toks, err := readTokenFile(path)
	if err != nil {
		return "", nil, err
	}
	sums := make([][sha256.Size]byte, len(toks))
	for i, t := range toks {
		sums[i] = sha256.Sum256([]byte(t))
	}
	return stamp, sums, nil
}

// ReadTokens parses tokens, one per line; blank lines and lines starting with # are skipped.
func ReadTokens(data []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := validToken(line); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

func readTokenFile(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	toks, err := ReadTokens(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("%s: no token", path)
	}
	return toks, nil
}

// enabled reports whether clients must authenticate.
func (a *authenticator) enabled() bool { return len(a.static) > 0 || len(a.files) > 0 || a.clientCerts }

func (a *authenticator) authenticated(r *http.Request) bool {
	if a.clientCerts && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return false
	}
	a.reload()
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	tokens := *a.tokens.Load()
	for i := range tokens {
		match |= subtle.ConstantTimeCompare(sum[:], tokens[i][:])
	}
	return match == 1
}

// wrap answers 401 (with no data) to unauthenticated requests on every path but /health and, with
// PublicMetrics, /metrics.
func (a *authenticator) wrap(next http.Handler, count func(int)) http.Handler {
	if !a.enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || (a.publicMetrics && r.URL.Path == "/metrics") || a.authenticated(r) {
			next.ServeHTTP(w, r)
			return
		}
		count(http.StatusUnauthorized)
		w.Header().Set("WWW-Authenticate", `Bearer realm="keygate"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"error": "unauthorized: a valid bearer token or client certificate is required"})
	})
}
