package seed_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/keygate/keygate/bundles"
	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/seed"
)

// FuzzParse feeds arbitrary bytes to seed.Parse, seeded with the embedded seeds and malformed ones: it never
// panics; a snapshot it accepts survives Marshal and Parse unchanged, and resolving it against the built-in
// catalogue gives a model or a *model.ValidationError naming the problems, never a panic or another error.
func FuzzParse(f *testing.F) {
	for _, s := range [][]byte{bundles.Demo, bundles.IdentityRoutes, []byte(""), []byte("null"), []byte("{}"),
		[]byte("keys: [{id: k1, name: View}]"), []byte(`{"keys":[{"id":"k1","name":"View","bogus":1}]}`),
		[]byte("keys: {id: 1}"), []byte("users: [{id: u1}, {id: u1}]"), []byte("roles: [{keychains: [nope]}]"),
		[]byte("a: &a [*a, *a]"), []byte("\xff\xfe"), []byte("- - - -"), []byte(`{"keys":[{"id":"k","name":"n"}]} x`),
		[]byte("users: [{id: u1, deleted_at: not-a-time}]")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := seed.Parse("fuzz", data)
		if err != nil {
			return
		}
		out, err := seed.Marshal(s)
		if err != nil {
			t.Fatalf("Marshal of an accepted snapshot: %v", err)
		}
		back, err := seed.Parse("again", out)
		if err != nil {
			t.Fatalf("the marshalled snapshot does not parse: %v\n%s", err, out)
		}
		a, _ := json.Marshal(s)
		b, _ := json.Marshal(back)
		if !bytes.Equal(a, b) {
			t.Fatalf("round trip changed the snapshot:\n%s\n%s", a, b)
		}
		if _, err := catalog.Resolve(s); err != nil {
			var ve *model.ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Resolve: %v (not a ValidationError with problems)", err)
			}
		}
	})
}
