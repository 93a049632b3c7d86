package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newKey(t testing.TB) jwk.Key {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k, err := signingKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func publicSet(t testing.TB, keys ...jwk.Key) jwk.Set {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := k.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := set.AddKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

func mint(t testing.TB, key jwk.Key, spec TokenSpec) string {
	t.Helper()
	if spec.Now.IsZero() {
		spec.Now = t0
	}
	tok, err := Mint(key, spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerify(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	other := newKey(t)
	kid, _ := key.KeyID()

	// other's signature under key's kid: a forged token.
	forgedKey, _ := other.Clone()
	_ = forgedKey.Set(jwk.KeyIDKey, kid)

	// HS256 keyed with the RSA public key's PEM (the classic confusion attack).
	pubRaw, _ := jwk.PublicRawKeyOf(key)
	der, _ := x509.MarshalPKIXPublicKey(pubRaw)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hsTok := func() string {
		tok, _ := jwt.NewBuilder().Subject("u1").Expiration(t0.Add(time.Hour)).Build()
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.KeyIDKey, kid)
		s, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256(), pemBytes, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(s)
	}()
	// PS256 with the key declared RS256.
	psTok := func() string {
		tok, _ := jwt.NewBuilder().Subject("u1").Expiration(t0.Add(time.Hour)).Build()
		s, err := jwt.Sign(tok, jwt.WithKey(jwa.PS256(), key))
		if err != nil {
			t.Fatal(err)
		}
		return string(s)
	}()
	valid := mint(t, key, TokenSpec{User: "u1", ID: "t1", TTL: time.Hour, Issuer: "keygate", Audience: []string{"api"}})
	parts := strings.Split(valid, ".")
	noneTok := b64(`{"alg":"none","kid":"`+kid+`"}`) + "." + parts[1] + "."
	noneTok2 := b64(`{"alg":"none","kid":"`+kid+`"}`) + "." + parts[1] + "." + parts[2]
	tampered := parts[0] + "." + b64(`{"sub":"admin","jti":"t1","iss":"keygate","aud":["api"],"exp":`+
		"9999999999}") + "." + parts[2]

	cases := []struct {
		name    string
		token   string
		at      time.Time
		want    Reason
		subject string
	}{
		{name: "valid token is accepted", token: valid, subject: "u1"},
		{name: "empty token is missing", token: "", want: ReasonMissing},
		{name: "garbage is malformed", token: "abc", want: ReasonMalformed},
		{name: "bad header is malformed", token: "!!!.e30.sig", want: ReasonMalformed},
		{name: "forged signature is rejected", token: mint(t, forgedKey, TokenSpec{User: "u1", TTL: time.Hour, Issuer: "keygate", Audience: []string{"api"}}), want: ReasonSignature},
		{name: "tampered payload is rejected", token: tampered, want: ReasonSignature},
		{name: "expired token is rejected", token: valid, at: t0.Add(2 * time.Hour), want: ReasonExpired},
		{name: "expiry within skew is accepted", token: valid, at: t0.Add(time.Hour + 10*time.Second), subject: "u1"},
		{name: "token before nbf is rejected", token: valid, at: t0.Add(-time.Hour), want: ReasonNotYetValid},
		{name: "wrong issuer is rejected", token: mint(t, key, TokenSpec{User: "u1", TTL: time.Hour, Issuer: "evil", Audience: []string{"api"}}), want: ReasonIssuer},
		{name: "wrong audience is rejected", token: mint(t, key, TokenSpec{User: "u1", TTL: time.Hour, Issuer: "keygate", Audience: []string{"other"}}), want: ReasonAudience},
		{name: "alg none without signature is rejected", token: noneTok, want: ReasonAlgorithm},
		{name: "alg none with signature is rejected", token: noneTok2, want: ReasonAlgorithm},
		{name: "HS256 keyed with the RSA public key is rejected", token: hsTok, want: ReasonAlgorithm},
		{name: "algorithm other than the key's is rejected", token: psTok, want: ReasonAlgorithm},
		{name: "unknown kid is rejected", token: mint(t, other, TokenSpec{User: "u1", TTL: time.Hour}), want: ReasonUnknownKey},
		{name: "token without sub is malformed", token: func() string {
			tok, _ := jwt.NewBuilder().Expiration(t0.Add(time.Hour)).Issuer("keygate").Audience([]string{"api"}).Build()
			s, _ := jwt.Sign(tok, jwt.WithKey(jwa.RS256(), key))
			return string(s)
		}(), want: ReasonMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			at := tc.at
			if at.IsZero() {
				at = t0.Add(time.Minute)
			}
			cfg := Config{Issuer: "keygate", Audiences: []string{"api", "web"}, CacheSize: -1,
				Algorithms: append(DefaultAlgorithms, "HS256")}
			v, err := NewFromSet(cfg, publicSet(t, key), WithClock(func() time.Time { return at }))
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(context.Background(), tc.token)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason = %q (err %v), want %q", got, err, tc.want)
			}
			if tc.want == "" && c.Subject != tc.subject {
				t.Fatalf("subject = %q, want %q", c.Subject, tc.subject)
			}
		})
	}
}

func TestVerifyCacheHonoursExpiry(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	now := t0
	v, err := NewFromSet(Config{}, publicSet(t, key), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, key, TokenSpec{User: "u1", ID: "j1", TTL: 10 * time.Second})
	c, err := v.Verify(context.Background(), tok)
	if err != nil || c.ID != "j1" {
		t.Fatalf("first verify: %+v %v", c, err)
	}
	if _, ok := v.lookup(tok, now); !ok {
		t.Fatal("verified token not cached")
	}
	now = t0.Add(time.Minute) // past exp + skew
	if _, err := v.Verify(context.Background(), tok); ReasonOf(err) != ReasonExpired {
		t.Fatalf("cached token after expiry: %v, want expired", err)
	}
}

func TestJWKSFromURLRefreshesOnUnknownKid(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	var current atomic.Pointer[[]byte]
	b1, _ := PublicJWKS(k1)
	current.Store(&b1)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*current.Load())
	}))
	t.Cleanup(srv.Close)

	ctx := context.Background()
	v, err := New(ctx, Config{JWKSURL: srv.URL, JWKSRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close(ctx) })
	if _, err := v.Verify(ctx, mint(t, k1, TokenSpec{User: "u1", TTL: time.Hour, Now: time.Now()})); err != nil {
		t.Fatalf("k1 token: %v", err)
	}
	// Rotate: the server now publishes k2 only; a k2 token forces one refresh.
	b2, _ := PublicJWKS(k2)
	current.Store(&b2)
	if _, err := v.Verify(ctx, mint(t, k2, TokenSpec{User: "u2", TTL: time.Hour, Now: time.Now()})); err != nil {
		t.Fatalf("k2 token after rotation: %v", err)
	}
	if hits.Load() < 2 {
		t.Fatalf("JWKS fetched %d times, want a refresh", hits.Load())
	}
}

func TestNewFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyPath, jwksPath, err := GenerateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(context.Background(), Config{JWKSFile: jwksPath})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), mint(t, key, TokenSpec{User: "alice", ID: "tok-1", TTL: time.Hour, Now: time.Now()}))
	if err != nil || c.Subject != "alice" || c.ID != "tok-1" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	if info, _ := os.Stat(filepath.Join(dir, DevKeyFile)); info.Mode().Perm() != 0o600 {
		t.Fatalf("dev key mode %v, want 0600", info.Mode().Perm())
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  Config
		want string // substring naming the key; "" = valid
	}{
		{name: "file is valid", cfg: Config{JWKSFile: "x.json"}},
		{name: "file and url conflict", cfg: Config{JWKSFile: "x", JWKSURL: "http://h/j"}, want: "identity.jwks_file"},
		{name: "url must be http", cfg: Config{JWKSURL: "ftp://h/j"}, want: "identity.jwks_url"},
		{name: "skew bounded", cfg: Config{JWKSFile: "x", ClockSkew: time.Hour}, want: "identity.clock_skew"},
		{name: "none is not an algorithm", cfg: Config{JWKSFile: "x", Algorithms: []string{"none"}}, want: "identity.algorithms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.SetDefaults()
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "Bearer ": "", "": ""} {
		got, ok := BearerToken(in)
		if got != want || ok != (want != "") {
			t.Errorf("BearerToken(%q) = %q, %v", in, got, ok)
		}
	}
}
