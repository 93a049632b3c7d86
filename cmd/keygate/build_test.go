package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/engine"
)

// runCmd runs the keygate command line and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBuildWritesAValidBundle(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	code, stdout, stderr := runCmd(t, "build", "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := engine.Read(data, engine.Verification{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "revision "+b.Manifest.Revision) {
		t.Errorf("output %q does not name the revision %s", stdout, b.Manifest.Revision)
	}
}

func TestBuildRejectsBadSeedsWithoutWriting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, seed string
		code       int
		want       []string
	}{
		{"dangling reference and unknown scope", `
users: [{id: u1}]
organizations: [{id: o1, owner: u1}]
roles: [{id: r1, name: Odd, scope: galaxy, org: o1}]
assignments: [{user: ghost, role: User, org: o1}]
`, 1, []string{`roles[0] (id "r1"): scope: unknown scope "galaxy"`, `assignments[0]: user: unknown user "ghost"`}},
		{"duplicate id", "users: [{id: u1}, {id: u1}]\n", 1, []string{`users[1] (id "u1"): id: duplicate id "u1"`}},
		{"unknown field", "users: [{id: u1, colour: blue}]\n", 1, []string{`unknown field "colour"`}},
		{"not YAML", "users: [\n", 1, []string{"not valid YAML or JSON"}},
		{"wrong type", "users: {id: u1}\n", 1, []string{"field users"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			seed := filepath.Join(dir, "seed.yaml")
			if err := os.WriteFile(seed, []byte(tc.seed), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "bundle.tar.gz")
			code, _, stderr := runCmd(t, "build", "--seed", seed, "-o", out)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("build left files behind: %v", entries)
			}
		})
	}
}

func TestBuildUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"build"}, // no -o
		{"build", "-o", "x", "--signing-key", "/nonexistent"},
		{"build", "-o", "x", "--signing-alg", "RS256"}, // alg without key
		{"build", "--frobnicate"},
	} {
		if code, _, stderr := runCmd(t, args...); code != 2 {
			t.Errorf("keygate %v: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"allowed, explained", []string{"check", "--user", "u-alice", "--org", "org-layer5", "--key", "View All Teams", "--explain"}, 0,
			"-> role Organization Admin"},
		{"denied with the reason", []string{"check", "--user", "u-bob", "--org", "org-layer5", "--key", "Delete Organization", "--resource", "organization:org-layer5", "--explain"}, exitDenied,
			"reason: owner_required"},
		{"assign decision as JSON", []string{"check", "assign", "--actor", "u-alice", "--role", "Organization Admin", "--user", "u-heidi", "--org", "org-layer5"}, 0,
			`"via": "org_owner"`},
		{"input document", []string{"check", "--input", `{"token": "tok-bob-revoked", "org": "org-layer5", "key": "View All Teams"}`}, exitDenied,
			`"token_revoked"`},
		{"bare allow false is denied", []string{"check", "--decision", "data.keygate.authz.allow", "--user", "u-heidi", "--org", "org-layer5", "--key", "Delete Organization"}, exitDenied,
			"false"},
		{"a listing is an answer, not a denial", []string{"check", "--decision", "data.keygate.authz.key_grants", "--user", "u-heidi", "--org", "org-layer5"}, 0,
			`"owner_only"`},
		{"assign without action is an invalid action", []string{"check", "assign", "--input", `{"actor": "u-alice", "role": "User", "user": "u-heidi", "org": "org-layer5"}`}, exitDenied,
			`"invalid_action"`},
		{"bad resource", []string{"check", "--user", "u", "--org", "o", "--key", "k", "--resource", "nocolon"}, 2, ""},
		{"bad decision kind", []string{"check", "frobnicate"}, 2, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.want) {
				t.Errorf("stdout does not contain %q:\n%s", tc.want, stdout)
			}
		})
	}
}

func TestCheckVerifiesSignedBundles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(keyFile, []byte("a-shared-secret-of-enough-length-32b"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bundle.tar.gz")
	if code, _, stderr := runCmd(t, "build", "-o", out, "--signing-key", keyFile); code != 0 {
		t.Fatal(stderr)
	}
	args := []string{"check", "--bundle", out, "--user", "u-alice", "--org", "org-layer5", "--key", "View All Teams"}
	if code, _, stderr := runCmd(t, append(args, "--verification-key", keyFile, "--verification-alg", "HS256")...); code != 0 {
		t.Fatalf("verified check: exit %d: %s", code, stderr)
	}
	other := filepath.Join(dir, "other")
	_ = os.WriteFile(other, []byte("another-secret-another-secret-000"), 0o600)
	code, _, stderr := runCmd(t, append(args, "--verification-key", other, "--verification-alg", "HS256")...)
	if code == 0 || !strings.Contains(stderr, "bundle") {
		t.Fatalf("a bundle checked with the wrong key: exit %d: %s", code, stderr)
	}
}

func TestImportKeysPublicCatalogue(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "..", "shared", "data")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("public catalogue not found: %v", err)
		}
		t.Skipf("public catalogue not found: %v", err)
	}
	tmp := t.TempDir()
	seed := filepath.Join(tmp, "catalogue.yaml")
	code, stdout, stderr := runCmd(t, "import-keys", dir, "-o", seed)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "imported 466 keys, 1112 grants (19 owner-only)") {
		t.Errorf("output: %s", stdout)
	}
	out := filepath.Join(tmp, "bundle.tar.gz")
	if code, _, stderr := runCmd(t, "build", "--seed", seed, "-o", out); code != 0 {
		t.Fatalf("building the imported catalogue: %s", stderr)
	}
	// A key only the public catalogue has now resolves by name.
	code, stdout, _ = runCmd(t, "check", "--bundle", out, "--decision", "data.keygate.authz.decision",
		"--input", `{"user": "nobody", "org": "none", "key": "Manage Subscriptions"}`)
	var d struct {
		Key     string   `json:"key"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if d.Key != "01462c43-dfa8-4a5e-805a-267c9b0ec7ec" || code != exitDenied {
		t.Errorf("decision = %+v (exit %d)", d, code)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	if code, stdout, _ := runCmd(t, "version"); code != 0 || !strings.HasPrefix(stdout, "keygate ") {
		t.Fatalf("exit %d: %q", code, stdout)
	}
}
