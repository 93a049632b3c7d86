package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Reason names why a bearer token was rejected; the values are the closed label set of
// keygate_jwt_failures_total (docs/metrics.md).
type Reason string

// Rejection reasons.
const (
	ReasonMissing     Reason = "missing"
	ReasonMalformed   Reason = "malformed"
	ReasonSignature   Reason = "signature"
	ReasonExpired     Reason = "expired"
	ReasonNotYetValid Reason = "not_yet_valid"
	ReasonIssuer      Reason = "issuer"
	ReasonAudience    Reason = "audience"
	ReasonAlgorithm   Reason = "algorithm"
	ReasonUnknownKey  Reason = "unknown_key"
)

// Reasons lists every Reason, for pre-initialising metric series.
var Reasons = []Reason{ReasonMissing, ReasonMalformed, ReasonSignature, ReasonExpired, ReasonNotYetValid,
	ReasonIssuer, ReasonAudience, ReasonAlgorithm, ReasonUnknownKey}

// Error is a rejected token.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "jwt " + string(e.Reason)
	}
	return "jwt " + string(e.Reason) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func reject(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the rejection reason of err, or "" when err is not a rejection.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Claims are the verified claims keygate uses.
type Claims struct {
	Subject string    // sub: the user id
	ID      string    // jti: the token id (checked against the bundle's tokens by the policy)
	Expiry  time.Time // exp (zero when absent)
}

// Verifier verifies compact JWS bearer tokens. Safe for concurrent use.
type Verifier struct {
	cfg     Config
	algs    map[string]bool
	keys    func() (jwk.Set, error)
	refresh func(context.Context) error // re-fetch the JWKS (URL mode), nil otherwise
	closeFn func(context.Context) error
	now     func() time.Time

	lastRefresh atomic.Int64 // unix nanos of the last refresh forced by an unknown kid

	mu    sync.RWMutex
	cache map[string]cached
}

type cached struct {
	claims Claims
	until  time.Time
}

// Option customises a Verifier (tests).
type Option func(*Verifier)

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// New loads the configured key set: JWKSFile once, or JWKSURL with a background refresh that lives until
// Close. It fails when the first fetch fails.
func New(ctx context.Context, cfg Config, opts ...Option) (*Verifier, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case cfg.JWKSFile != "":
		set, err := jwk.ReadFile(cfg.JWKSFile, jwk.WithPEM(isPEMFile(cfg.JWKSFile)))
		if err != nil {
			return nil, fmt.Errorf("reading identity.jwks_file: %w", err)
		}
		return NewFromSet(cfg, set, opts...)
	case cfg.JWKSURL != "":
		// The cache's goroutines outlive ctx's request scope but not Close.
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cache, err := jwk.NewCache(cctx, httprc.NewClient())
		if err != nil {
			cancel()
			return nil, fmt.Errorf("starting the JWKS cache: %w", err)
		}
		if err := cache.Register(ctx, cfg.JWKSURL, jwk.WithMinInterval(cfg.JWKSRefresh)); err != nil {
			cancel()
			return nil, fmt.Errorf("fetching identity.jwks_url: %w", err)
		}
		set, err := cache.CachedSet(cfg.JWKSURL)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("fetching identity.jwks_url: %w", err)
		}
		v, err := newVerifier(cfg, opts)
		if err != nil {
			cancel()
			return nil, err
		}
		v.keys = func() (jwk.Set, error) { return set, nil }
		v.refresh = func(ctx context.Context) error {
			_, err := cache.Refresh(ctx, cfg.JWKSURL)
			return err
		}
		v.closeFn = func(ctx context.Context) error {
			defer cancel()
			return cache.Shutdown(ctx)
		}
		return v, nil
	default:
		return nil, errors.New("identity: one of identity.jwks_file and identity.jwks_url is required")
	}
}

func isPEMFile(name string) bool {
	return strings.HasSuffix(name, ".pem") || strings.HasSuffix(name, ".crt")
}

// NewFromSet verifies against a fixed key set.
func NewFromSet(cfg Config, set jwk.Set, opts ...Option) (*Verifier, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v, err := newVerifier(cfg, opts)
	if err != nil {
		return nil, err
	}
	v.keys = func() (jwk.Set, error) { return set, nil }
	return v, nil
}

func newVerifier(cfg Config, opts []Option) (*Verifier, error) {
	v := &Verifier{cfg: cfg, algs: map[string]bool{}, now: time.Now, cache: map[string]cached{}}
	for _, a := range cfg.Algorithms {
		v.algs[a] = true
	}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// Close stops the background JWKS refresh.
func (v *Verifier) Close(ctx context.Context) error {
	if v.closeFn != nil {
		return v.closeFn(ctx)
	}
	return nil
}

// BearerToken extracts the token of an "Authorization: Bearer <token>" header value.
func BearerToken(authorization string) (string, bool) {
	const prefix = "bearer "
	if len(authorization) <= len(prefix) || !strings.EqualFold(authorization[:len(prefix)], prefix) {
		return "", false
	}
	tok := strings.TrimSpace(authorization[len(prefix):])
	return tok, tok != ""
}

type header struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Crit []string `json:"crit"`
}

// Verify checks that token's header and claims are strict JSON (no repeated names, UTF-8, NumericDates as
// numbers: strict.go), its signature against the key its kid names (whose declared algorithm must be the
// token's), then exp and nbf (with the configured skew), iss and aud. Errors are *Error.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	if token == "" {
		return Claims{}, &Error{Reason: ReasonMissing}
	}
	now := v.now()
	if c, ok := v.lookup(token, now); ok {
		return c, nil
	}
	c, err := v.verify(ctx, token, now)
	if err != nil {
		return Claims{}, err
	}
	v.store(token, c, now)
	return c, nil
}

func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (Claims, error) {
	h, err := parseHeader(token)
	if err != nil {
		return Claims{}, err
	}
	if h.Alg == "" || strings.EqualFold(h.Alg, "none") || !v.algs[h.Alg] {
		return Claims{}, reject(ReasonAlgorithm, "algorithm %q is not accepted", h.Alg)
	}
	if len(h.Crit) > 0 {
		return Claims{}, reject(ReasonMalformed, "unsupported critical header parameters %v", h.Crit)
	}
	if err := checkClaims(token); err != nil {
		return Claims{}, reject(ReasonMalformed, "%w", err)
	}
	if h.Kid == "" {
		return Claims{}, reject(ReasonUnknownKey, "token has no kid")
	}
	set, err := v.keys()
	if err != nil {
		return Claims{}, reject(ReasonUnknownKey, "key set unavailable: %w", err)
	}
	key, ok := set.LookupKeyID(h.Kid)
	if !ok && v.refresh != nil && v.mayRefresh(now) {
		if err := v.refresh(ctx); err == nil {
			key, ok = set.LookupKeyID(h.Kid)
		}
	}
	if !ok {
		return Claims{}, reject(ReasonUnknownKey, "no key with kid %q", h.Kid)
	}
	if err := keyAllows(key, h.Alg); err != nil {
		return Claims{}, err
	}

	opts := []jwt.ParseOption{
		jwt.WithKeySet(set, jws.WithRequireKid(true), jws.WithInferAlgorithmFromKey(true)),
		jwt.WithValidate(true),
		jwt.WithAcceptableSkew(v.cfg.ClockSkew),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if len(v.cfg.Audiences) > 0 {
		opts = append(opts, jwt.WithValidator(jwt.ValidatorFunc(v.checkAudience)))
	}
	t, err := jwt.ParseString(token, opts...)
	if err != nil {
		return Claims{}, classify(err)
	}
	var c Claims
	c.Subject, _ = t.Subject()
	c.ID, _ = t.JwtID()
	c.Expiry, _ = t.Expiration()
	if c.Subject == "" {
		return Claims{}, reject(ReasonMalformed, "token has no sub claim")
	}
	return c, nil
}

var errAudience = errors.New("aud not accepted")

func (v *Verifier) checkAudience(_ context.Context, t jwt.Token) error {
	aud, _ := t.Audience()
	for _, a := range aud {
		if slices.Contains(v.cfg.Audiences, a) {
			return nil
		}
	}
	return errAudience
}

func (v *Verifier) mayRefresh(now time.Time) bool {
	last := v.lastRefresh.Load()
	if now.UnixNano()-last < int64(10*time.Second) {
		return false
	}
	return v.lastRefresh.CompareAndSwap(last, now.UnixNano())
}

func classify(err error) error {
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return &Error{Reason: ReasonExpired, Err: err}
	case errors.Is(err, jwt.TokenNotYetValidError()), errors.Is(err, jwt.InvalidIssuedAtError()):
		return &Error{Reason: ReasonNotYetValid, Err: err}
	case errors.Is(err, jwt.InvalidIssuerError()):
		return &Error{Reason: ReasonIssuer, Err: err}
	case errors.Is(err, jwt.InvalidAudienceError()), errors.Is(err, errAudience):
		return &Error{Reason: ReasonAudience, Err: err}
	case errors.Is(err, jwt.ValidateError()):
		return &Error{Reason: ReasonMalformed, Err: err}
	case errors.Is(err, jws.VerifyError()), errors.Is(err, jws.VerificationError()):
		return &Error{Reason: ReasonSignature, Err: err}
	default:
		return &Error{Reason: ReasonMalformed, Err: err}
	}
}

func parseHeader(token string) (header, error) {
	var h header
	first := strings.IndexByte(token, '.')
	if first < 0 || strings.Count(token, ".") != 2 {
		return h, reject(ReasonMalformed, "not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(token[:first])
	if err != nil {
		return h, reject(ReasonMalformed, "header: %w", err)
	}
	if err := strictJSON(raw); err != nil {
		return h, reject(ReasonMalformed, "header: %w", err)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, reject(ReasonMalformed, "header: %w", err)
	}
	return h, nil
}

// keyAllows rejects algorithm confusion: a key that declares an algorithm is used only with that algorithm,
// and a key that does not is used only with algorithms of its own type (never HMAC with a public key).
func keyAllows(key jwk.Key, alg string) error {
	if declared, ok := key.Algorithm(); ok && declared.String() != "" {
		if declared.String() != alg {
			return reject(ReasonAlgorithm, "key is for %s, token says %s", declared, alg)
		}
		return nil
	}
	var family []string
	switch key.KeyType() {
	case jwa.RSA():
		family = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case jwa.EC():
		family = []string{"ES256", "ES384", "ES512"}
	case jwa.OKP():
		family = []string{"EdDSA"}
	case jwa.OctetSeq():
		family = []string{"HS256", "HS384", "HS512"}
	}
	if !slices.Contains(family, alg) {
		return reject(ReasonAlgorithm, "%s key cannot verify %s", key.KeyType(), alg)
	}
	return nil
}

func (v *Verifier) lookup(token string, now time.Time) (Claims, bool) {
	if v.cfg.CacheSize < 0 {
		return Claims{}, false
	}
	v.mu.RLock()
	e, ok := v.cache[token]
	v.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return Claims{}, false
	}
	return e.claims, true
}

func (v *Verifier) store(token string, c Claims, now time.Time) {
	if v.cfg.CacheSize < 0 {
		return
	}
	until := now.Add(v.cfg.CacheTTL)
	if !c.Expiry.IsZero() && c.Expiry.Add(v.cfg.ClockSkew).Before(until) {
		until = c.Expiry.Add(v.cfg.ClockSkew)
	}
	v.mu.Lock()
	if len(v.cache) >= v.cfg.CacheSize {
		clear(v.cache) // crude but bounded; verified tokens are cheap to verify again
	}
	v.cache[token] = cached{claims: c, until: until}
	v.mu.Unlock()
}
