package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// strictSeeds are the payloads of TestVerifyIsStrictAboutClaims and neighbours.
var strictSeeds = []string{`{"sub":"u1","exp":1772370000}`, `{"sub":"u1","exp":"9999999999"}`, `{"sub":"u1","nbf":"1"}`,
	`{"sub":"u-heidi","sub":"u-alice"}`, `{"sub":"u1","x":{"a":1,"a":2}}`, `{"sub":"u1","s\u0075b":"u2"}`, `{"sub":12}`,
	"{\"sub\":\"u1\xff\"}", `{"sub":"u1"} {}`, `["sub"]`, `{"sub":"u1","aud":["a","b"],"iss":"i","jti":"t"}`,
	`{"sub":"u1","exp":1e400}`, `{"sub":"u1","exp":-1}`, `{}`, ``, `{"sub":"u1","aud":{}}`}

// FuzzVerify gives the verifier arbitrary tokens, seeded with valid, forged, tampered and malformed ones:
// it never panics, every rejection is an *Error with a reason, and a token it accepts verifies against the
// key with jws.Verify (it never accepts a token the key did not sign) and names a subject.
func FuzzVerify(f *testing.F) {
	key := newKey(f)
	other := newKey(f)
	kid, _ := key.KeyID()
	forger, _ := other.Clone()
	_ = forger.Set(jwk.KeyIDKey, kid)
	valid := mint(f, key, TokenSpec{User: "u1", ID: "t1", TTL: time.Hour})
	parts := strings.Split(valid, ".")
	f.Add(valid)
	f.Add(mint(f, forger, TokenSpec{User: "u1", TTL: time.Hour}))
	f.Add(parts[0] + "." + b64(`{"sub":"admin","exp":9999999999}`) + "." + parts[2])
	f.Add(b64(`{"alg":"none","kid":"`+kid+`"}`) + "." + parts[1] + ".")
	f.Add(b64(`{"alg":"RS256","kid":"`+kid+`","alg":"none"}`) + "." + parts[1] + "." + parts[2])
	f.Add("abc")
	f.Add("a.b.c")
	f.Add("..")
	for _, p := range strictSeeds {
		f.Add(signRaw(f, key, p))
	}
	pub, err := key.PublicKey()
	if err != nil {
		f.Fatal(err)
	}
	v, err := NewFromSet(Config{CacheSize: -1}, publicSet(f, key), WithClock(func() time.Time { return t0 }))
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(ctx, token)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("rejection without a reason: %v", err)
			}
			return
		}
		if _, err := jws.Verify([]byte(token), jws.WithKey(jwa.RS256(), pub)); err != nil {
			t.Fatalf("accepted a token the key did not sign: %q: %v", token, err)
		}
		if c.Subject == "" {
			t.Fatalf("accepted %q without a subject", token)
		}
	})
}

// FuzzVerifyClaims signs arbitrary claims bytes with the key (HS256, to keep signing cheap) and checks what
// the verifier accepts against an independent reading of RFC 7519: UTF-8 JSON, one object, no repeated
// top-level name, exp/nbf/iat numbers, sub a string equal to the verified subject.
func FuzzVerifyClaims(f *testing.F) {
	for _, p := range strictSeeds {
		f.Add([]byte(p))
	}
	secret := []byte("fuzz-secret-fuzz-secret-fuzz-secret!")
	key, err := jwk.Import(secret)
	if err != nil {
		f.Fatal(err)
	}
	_ = key.Set(jwk.KeyIDKey, "hs")
	_ = key.Set(jwk.AlgorithmKey, jwa.HS256())
	set := jwk.NewSet()
	_ = set.AddKey(key)
	v, err := NewFromSet(Config{CacheSize: -1, Algorithms: []string{"HS256"}}, set,
		WithClock(func() time.Time { return t0 }))
	if err != nil {
		f.Fatal(err)
	}
	signer, err := jws.SignerFor(jwa.HS256())
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	header := b64(`{"alg":"HS256","kid":"hs"}`)
	f.Fuzz(func(t *testing.T, payload []byte) {
		input := header + "." + base64.RawURLEncoding.EncodeToString(payload)
		sig, err := signer.Sign(key, []byte(input))
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(ctx, input+"."+base64.RawURLEncoding.EncodeToString(sig))
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("rejection without a reason: %v", err)
			}
			return
		}
		if !utf8.Valid(payload) || !json.Valid(payload) {
			t.Fatalf("accepted claims that are not UTF-8 JSON: %q", payload)
		}
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("accepted claims that are not an object: %q", payload)
		}
		names := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			name := tok.(string)
			if names[name] {
				t.Fatalf("accepted a repeated claim %q: %q", name, payload)
			}
			names[name] = true
			var value any
			if err := dec.Decode(&value); err != nil {
				t.Fatal(err)
			}
			switch name {
			case "exp", "nbf", "iat":
				if _, ok := value.(json.Number); !ok {
					t.Fatalf("accepted %s = %#v: %q", name, value, payload)
				}
			case "sub":
				if value != c.Subject {
					t.Fatalf("sub %#v, verified subject %q: %q", value, c.Subject, payload)
				}
			}
		}
	})
}
