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
)

// authenticator checks bearer tokens (compared as SHA-256 digests in constant time, so neither a
// token's bytes nor its length leak through timing) and verified client certificates.
type authenticator struct {
	tokens        [][sha256.Size]byte
	clientCerts   bool // a client CA is configured: a verified chain authenticates
	publicMetrics bool
}

func newAuthenticator(cfg Config) (*authenticator, error) {
	a := &authenticator{clientCerts: cfg.TLS.MutualTLS(), publicMetrics: cfg.Auth.PublicMetrics}
	for _, t := range cfg.Auth.Tokens {
		a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
	}
	for _, f := range cfg.Auth.TokenFiles {
		toks, err := readTokenFile(f)
		if err != nil {
			return nil, fmt.Errorf("auth.token_files: %w", err)
		}
		for _, t := range toks {
			a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
		}
	}
	return a, nil
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
func (a *authenticator) enabled() bool { return len(a.tokens) > 0 || a.clientCerts }

func (a *authenticator) authenticated(r *http.Request) bool {
	if a.clientCerts && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for i := range a.tokens {
		match |= subtle.ConstantTimeCompare(sum[:], a.tokens[i][:])
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
