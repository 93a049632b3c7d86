package compiler_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/engine"
	"github.com/keygate/keygate/internal/importer"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/revision"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func demoModel(t testing.TB) *model.Model {
	t.Helper()
	m, err := catalog.DemoModel()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGoldenDemoData pins the compiler's output for the demo dataset (go test -update to accept a change).
func TestGoldenDemoData(t *testing.T) {
	t.Parallel()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, compiler.Data(demoModel(t)), "", "  "); err != nil {
		t.Fatalf("data is not JSON: %v", err)
	}
	pretty.WriteByte('\n')
	golden := filepath.Join("testdata", "demo.data.json")
	if *update {
		if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("compiled data differs from %s; run go test ./internal/compiler -update and review the diff", golden)
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	t.Parallel()
	a, err := compiler.Build(demoModel(t), compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := compiler.Build(demoModel(t), compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Data, b.Data) || a.Revision != b.Revision {
		t.Fatalf("two builds of the same data differ: %s vs %s", a.Revision, b.Revision)
	}
	// A change in the data changes the revision.
	snap, _ := catalog.DemoWithRoutes()
	snap.Users[0].Deleted = true
	m, err := catalog.Resolve(snap)
	if err != nil {
		t.Fatal(err)
	}
	c, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Revision == a.Revision {
		t.Fatal("a data change kept the revision")
	}
}

func TestRevisionNamesThePosition(t *testing.T) {
	t.Parallel()
	at0, err := compiler.Build(demoModel(t), compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at42, err := compiler.Build(demoModel(t), compiler.Options{Position: 42})
	if err != nil {
		t.Fatal(err)
	}
	r0, err := revision.Parse(at0.Revision)
	if err != nil || r0.Position != 0 || !strings.HasPrefix(at0.Revision, "0-") {
		t.Fatalf("revision without a position %q (%v), want 0-HASH", at0.Revision, err)
	}
	r42, err := revision.Parse(at42.Revision)
	if err != nil || r42.Position != 42 || r42.Hash != r0.Hash || at42.Revision != revision.Format(42, r0.Hash) {
		t.Fatalf("revision at position 42 %q (%v), want 42-%s", at42.Revision, err, r0.Hash)
	}
	if !revision.Older(at0.Revision, at42.Revision) {
		t.Errorf("%s is not older than %s", at0.Revision, at42.Revision)
	}
}

func TestBundleManifest(t *testing.T) {
	t.Parallel()
	out, err := compiler.Build(demoModel(t), compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := engine.Read(out.Data, engine.Verification{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Revision != out.Revision {
		t.Errorf("manifest revision %q, want %q", b.Manifest.Revision, out.Revision)
	}
	if b.Manifest.Roots == nil || strings.Join(*b.Manifest.Roots, ",") != "keygate" {
		t.Errorf("roots = %v, want [keygate]", b.Manifest.Roots)
	}
	if len(b.Modules) < 3 {
		t.Errorf("bundle has %d modules, want the policies", len(b.Modules))
	}
	for _, m := range b.Modules {
		if strings.HasSuffix(m.Path, "_test.rego") || strings.Contains(m.Path, "fixture") {
			t.Errorf("bundle carries test module %s", m.Path)
		}
	}
}

func pemKeys(t *testing.T, alg string) (private, public []byte) {
	t.Helper()
	var priv any
	var pub any
	switch alg {
	case "RS256":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case "ES256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case "HS256":
		return []byte("a-shared-secret-of-enough-length-32b"), []byte("a-shared-secret-of-enough-length-32b")
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pder, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder})
}

func TestSignedBundlesVerify(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"RS256", "ES256", "HS256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			priv, pub := pemKeys(t, alg)
			out, err := compiler.Build(demoModel(t), compiler.Options{SigningKey: priv})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := engine.Read(out.Data, engine.Verification{Key: pub, Alg: alg}); err != nil {
				t.Fatalf("signed bundle does not verify: %v", err)
			}
			_, other := pemKeys(t, alg)
			if alg == "HS256" {
				other = []byte("another-secret-another-secret-000")
			}
			if _, err := engine.Read(out.Data, engine.Verification{Key: other, Alg: alg}); err == nil {
				t.Fatal("bundle verified with the wrong key")
			}
		})
	}
	t.Run("unsigned bundle rejected when a key is configured", func(t *testing.T) {
		t.Parallel()
		_, pub := pemKeys(t, "RS256")
		out, err := compiler.Build(demoModel(t), compiler.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := engine.Read(out.Data, engine.Verification{Key: pub}); err == nil {
			t.Fatal("unsigned bundle accepted")
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	rsaKey, _ := pemKeys(t, "RS256")
	cases := []struct {
		name string
		opts compiler.Options
		want string
	}{
		{"alg without key", compiler.Options{SigningAlg: "RS256"}, "signing_alg: set without a signing key"},
		{"unknown alg", compiler.Options{SigningKey: rsaKey, SigningAlg: "XX1"}, `signing_alg: unsupported algorithm "XX1"`},
		{"hmac with pem", compiler.Options{SigningKey: rsaKey, SigningAlg: "HS256"}, "needs a shared secret"},
		{"rsa with secret", compiler.Options{SigningKey: []byte("secret"), SigningAlg: "RS256"}, "needs a PEM private key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestImportPublicCatalogue imports ../shared/data (466 keys, 1,112 grants) and builds a bundle from it.
func TestImportPublicCatalogue(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "..", "shared", "data")
	files := importer.InDir(dir)
	if files.Keys == "" || files.Grants == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("public catalogue not found in %s", dir)
		}
		t.Skipf("public catalogue not found in %s", dir)
	}
	snap, st, err := importer.Import(files)
	if err != nil {
		t.Fatal(err)
	}
	if st.Keys != 466 || st.Grants != 1112 {
		t.Fatalf("imported %d keys and %d grants, want 466 and 1112", st.Keys, st.Grants)
	}
	m, err := catalog.Resolve(snap)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Keys) != 466 {
		t.Errorf("model has %d keys, want 466 (built-in keys are the catalogue's)", len(m.Keys))
	}
	grants := 0
	for _, kc := range m.Keychains {
		if strings.HasSuffix(kc.Name, " grants") {
			grants += len(kc.Keys)
		}
	}
	if grants != 1112 {
		t.Errorf("grant keychains hold %d keys, want 1112", grants)
	}
	out, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := engine.Read(out.Data, engine.Verification{})
	if err != nil {
		t.Fatal(err)
	}
	db := b.Data["keygate"].(map[string]any)["db"].(map[string]any)
	if n := len(db["keys"].(map[string]any)); n != 466 {
		t.Errorf("bundle has %d keys, want 466", n)
	}
	// The owner-only cells of the User role survive as owner-only keys of the role.
	userRole := m.SystemRoles[model.RoleUser]
	owner := 0
	for _, ownerOnly := range m.RoleKeys(userRole) {
		if ownerOnly {
			owner++
		}
	}
	if owner < 9 {
		t.Errorf("User role has %d owner-only keys, want at least the catalogue's 9", owner)
	}
}

// TestDataIsCanonical holds the writer to what OPA's signature hashing computes over the parsed document:
// compact JSON, object keys sorted, HTML not escaped. A key written out of order would break signatures.
func TestDataIsCanonical(t *testing.T) {
	t.Parallel()
	data := compiler.Data(demoModel(t))
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	if canonical := bytes.TrimSuffix(buf.Bytes(), []byte("\n")); !bytes.Equal(canonical, data) {
		i := 0
		for i < len(data) && i < len(canonical) && data[i] == canonical[i] {
			i++
		}
		t.Fatalf("data is not canonical JSON; first difference at byte %d: %q", i, data[max(0, i-40):min(len(data), i+40)])
	}
}

func TestProviderGrantsCoverEveryKey(t *testing.T) {
	t.Parallel()
	m := demoModel(t)
	var doc struct {
		Keys           map[string]any              `json:"keys"`
		ProviderGrants map[string][]map[string]any `json:"provider_grants"`
	}
	if err := json.Unmarshal(compiler.Data(m), &doc); err != nil {
		t.Fatal(err)
	}
	for id := range doc.Keys {
		if len(doc.ProviderGrants[id]) == 0 {
			t.Errorf("key %s has no Provider Admin grant path", id)
		}
	}
}

// TestDeletedAdminsAreNotCounted: orgs[o].admins, behind the last-Organization-Admin invariant, counts live
// admins only: a deleted one administers nothing, so the org would be left without one.
func TestDeletedAdminsAreNotCounted(t *testing.T) {
	t.Parallel()
	snap := model.Snapshot{
		Users: []model.User{{ID: "u-live", Email: "live@example.com", Plan: "team"},
			{ID: "u-gone", Email: "gone@example.com", Plan: "team", Deleted: true}},
		Organizations: []model.Organization{{ID: "o", Name: "O", Owner: "u-live"}},
		Assignments: []model.Assignment{{User: "u-live", Role: "Organization Admin", Org: "o"},
			{User: "u-gone", Role: "Organization Admin", Org: "o"}},
	}
	m, err := catalog.Resolve(snap)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Orgs map[string]struct {
			Admins  int               `json:"admins"`
			Members map[string]string `json:"members"`
		} `json:"orgs"`
	}
	if err := json.Unmarshal(compiler.Data(m), &doc); err != nil {
		t.Fatal(err)
	}
	if got := doc.Orgs["o"].Admins; got != 1 {
		t.Fatalf("admins = %d, want 1 (the deleted admin is not counted)", got)
	}
	if live, gone := doc.Orgs["o"].Members["u-live"], doc.Orgs["o"].Members["u-gone"]; gone != "r"+live {
		t.Fatalf("members: live %q, deleted %q; want the deleted one on the twin r%s", live, gone, live)
	}
}
