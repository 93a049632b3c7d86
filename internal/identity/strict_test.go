package identity

import (
	"context"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// signRaw signs payload exactly as given (no JSON re-encoding) with key, so a test controls the bytes the
// verifier parses. The protected header is alg and kid, or header when it is set.
func signRaw(t testing.TB, key jwk.Key, payload string, header ...string) string {
	t.Helper()
	hdr := jws.NewHeaders()
	kid, _ := key.KeyID()
	_ = hdr.Set(jws.KeyIDKey, kid)
	signed, err := jws.Sign([]byte(payload), jws.WithKey(jwa.RS256(), key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	if len(header) == 1 {
		// Re-sign with a hand-written header: signing input is base64(header) "." base64(payload).
		signed = resignWithHeader(t, key, header[0], payload)
	}
	return string(signed)
}

// resignWithHeader builds a compact JWS with exactly these header and payload bytes.
func resignWithHeader(t testing.TB, key jwk.Key, header, payload string) []byte {
	t.Helper()
	signer, err := jws.SignerFor(jwa.RS256())
	if err != nil {
		t.Fatal(err)
	}
	input := b64(header) + "." + b64(payload)
	sig, err := signer.Sign(key, []byte(input))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(input + "." + b64(string(sig)))
}

// TestVerifyIsStrictAboutClaims: RFC 7519 NumericDate claims are JSON numbers, claim names are unique, and
// the header's names too; a token signed by the key that breaks one of these is malformed, never read
// last-wins or with a string taken for a number.
func TestVerifyIsStrictAboutClaims(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	kid, _ := key.KeyID()
	exp := "1772370000" // t0 + 1h
	cases := []struct {
		name    string
		token   string
		want    Reason
		subject string
	}{
		{name: "numeric exp is accepted", token: signRaw(t, key, `{"sub":"u1","exp":`+exp+`}`), subject: "u1"},
		{name: "fractional exp is accepted", token: signRaw(t, key, `{"sub":"u1","exp":`+exp+`.5}`), subject: "u1"},
		{name: "exp as a numeric string is malformed", token: signRaw(t, key, `{"sub":"u1","exp":"9999999999"}`), want: ReasonMalformed},
		{name: "nbf as a numeric string is malformed", token: signRaw(t, key, `{"sub":"u1","nbf":"1"}`), want: ReasonMalformed},
		{name: "iat as a numeric string is malformed", token: signRaw(t, key, `{"sub":"u1","iat":"1"}`), want: ReasonMalformed},
		{name: "exp as a boolean is malformed", token: signRaw(t, key, `{"sub":"u1","exp":true}`), want: ReasonMalformed},
		{name: "exp as null is malformed", token: signRaw(t, key, `{"sub":"u1","exp":null}`), want: ReasonMalformed},
		{name: "duplicate sub is malformed", token: signRaw(t, key, `{"sub":"u-heidi","sub":"u-alice"}`), want: ReasonMalformed},
		{name: "duplicate exp is malformed", token: signRaw(t, key, `{"sub":"u1","exp":1,"exp":`+exp+`}`), want: ReasonMalformed},
		{name: "duplicate name in a nested object is malformed", token: signRaw(t, key, `{"sub":"u1","x":{"a":1,"a":2}}`), want: ReasonMalformed},
		{name: "escaped duplicate name is malformed", token: signRaw(t, key, `{"sub":"u1","s\u0075b":"u2"}`), want: ReasonMalformed},
		{name: "sub as a number is malformed", token: signRaw(t, key, `{"sub":12}`), want: ReasonMalformed},
		{name: "jti as an object is malformed", token: signRaw(t, key, `{"sub":"u1","jti":{}}`), want: ReasonMalformed},
		{name: "invalid UTF-8 in the payload is malformed", token: signRaw(t, key, "{\"sub\":\"u1\xff\"}"), want: ReasonMalformed},
		{name: "trailing data after the claims is malformed", token: signRaw(t, key, `{"sub":"u1"} {}`), want: ReasonMalformed},
		{name: "a payload that is not an object is malformed", token: signRaw(t, key, `["sub"]`), want: ReasonMalformed},
		{name: "duplicate alg in the header is malformed",
			token: signRaw(t, key, `{"sub":"u1"}`, `{"alg":"none","kid":"`+kid+`","alg":"RS256"}`), want: ReasonMalformed},
		{name: "hand-written header is accepted",
			token: signRaw(t, key, `{"sub":"u1"}`, `{"alg":"RS256","kid":"`+kid+`"}`), subject: "u1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := NewFromSet(Config{CacheSize: -1}, publicSet(t, key),
				WithClock(func() time.Time { return t0 }))
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
