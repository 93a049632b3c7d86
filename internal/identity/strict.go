package identity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// strictJSON checks a JOSE header or a JWT claims set for what encoding/json lets through: the text must be
// UTF-8 (RFC 8259 8.1; encoding/json would read invalid bytes as U+FFFD), exactly one object with nothing
// after it, and no object, at any depth, may repeat a member name. RFC 7519 section 4 lets a parser take
// the lexically last duplicate; keygate refuses the token instead, so keygate and an upstream that takes the
// first value can never read two different claims sets from one token. Names are compared decoded, so
// "s\u0075b" repeats "sub".
func strictJSON(raw []byte) error {
	if !utf8.Valid(raw) {
		return errors.New("not UTF-8")
	}
	type frame struct {
		object    bool
		expectKey bool
		names     map[string]struct{}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var stack []frame
	first := true
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if first {
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return errors.New("not a JSON object")
			}
		} else if len(stack) == 0 {
			return errors.New("data after the JSON object")
		}
		first = false
		if n := len(stack); n > 0 && stack[n-1].object {
			top := &stack[n-1]
			if top.expectKey {
				if d, ok := tok.(json.Delim); ok && d == '}' {
					stack = stack[:n-1]
					continue
				}
				name := tok.(string) // the decoder only yields a string or '}' here
				if _, dup := top.names[name]; dup {
					return fmt.Errorf("duplicate member name %q", name)
				}
				top.names[name] = struct{}{}
				top.expectKey = false
				continue
			}
			top.expectKey = true // tok is the member's value
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, expectKey: true, names: map[string]struct{}{}})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
	if first {
		return errors.New("empty")
	}
	return nil
}

// checkClaims holds the claims set (the token's second segment) to RFC 7519: strict JSON (strictJSON), the
// NumericDate claims exp, nbf and iat JSON numbers (not numeric strings, which jwx would accept), sub, iss
// and jti strings, aud a string or an array.
func checkClaims(token string) error {
	first := strings.IndexByte(token, '.')
	last := strings.LastIndexByte(token, '.')
	raw, err := base64.RawURLEncoding.DecodeString(token[first+1 : last])
	if err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	if err := strictJSON(raw); err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(raw, &claims); err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	for name, v := range claims {
		var ok bool
		switch name {
		case "exp", "nbf", "iat":
			ok = v[0] == '-' || (v[0] >= '0' && v[0] <= '9')
		case "sub", "iss", "jti":
			ok = v[0] == '"'
		case "aud":
			ok = v[0] == '"' || v[0] == '['
		default:
			ok = true
		}
		if !ok {
			return fmt.Errorf("claims: %s is %s, not of its RFC 7519 type", name, v)
		}
	}
	return nil
}
