package engine_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/engine"
)

type decisionCase struct {
	note    string
	query   string
	input   map[string]any
	allow   bool
	reasons []string
}

// demoCases are decisions on the demo dataset (bundles/demo.yaml), one per rule of the seeds they exercise.
var demoCases = []decisionCase{
	{"org admin views all teams", engine.AuthzDecision, map[string]any{"user": "u-alice", "org": "org-layer5", "key": "View All Teams"}, true, nil},
	{"owner deletes own org", engine.AuthzDecision, map[string]any{"user": "u-alice", "org": "org-layer5", "key": "Delete Organization", "resource": map[string]any{"type": "organization", "id": "org-layer5"}}, true, nil},
	{"org admin who is not owner cannot delete the org", engine.AuthzDecision, map[string]any{"user": "u-bob", "org": "org-layer5", "key": "Delete Organization", "resource": map[string]any{"type": "organization", "id": "org-layer5"}}, false, []string{"owner_required"}},
	{"role in one org grants nothing in another", engine.AuthzDecision, map[string]any{"user": "u-alice", "org": "org-meshery", "key": "View All Teams"}, false, []string{"no_grant"}},
	{"provider admin may do anything anywhere", engine.AuthzDecision, map[string]any{"user": "u-peggy", "org": "org-meshery", "key": "Delete Team"}, true, nil},
	{"deleted user denied", engine.AuthzDecision, map[string]any{"user": "u-trent", "org": "org-layer5", "key": "View All Teams"}, false, []string{"user_deleted"}},
	{"new account with the same email regains nothing", engine.AuthzDecision, map[string]any{"user": "u-trent2", "org": "org-layer5", "key": "View All Teams"}, false, []string{"no_grant"}},
	{"token acts for its user", engine.AuthzDecision, map[string]any{"token": "tok-alice", "org": "org-layer5", "key": "Edit Organization"}, true, nil},
	{"revoked token denied", engine.AuthzDecision, map[string]any{"token": "tok-bob-revoked", "org": "org-layer5", "key": "View All Teams"}, false, []string{"token_revoked"}},
	{"expired token denied", engine.AuthzDecision, map[string]any{"token": "tok-carol-expired", "org": "org-layer5", "key": "View All Teams"}, false, []string{"token_expired"}},
	{"seed alias Update Organization resolves", engine.AuthzDecision, map[string]any{"user": "u-alice", "org": "org-layer5", "key": "Update Organization"}, true, nil},
	{"workspace admin edits own workspace", engine.AuthzDecision, map[string]any{"user": "u-frank", "org": "org-layer5", "key": "Edit Workspace", "resource": map[string]any{"type": "workspace", "id": "ws-prod"}}, true, nil},
	{"workspace role grants nothing without its workspace", engine.AuthzDecision, map[string]any{"user": "u-frank", "org": "org-layer5", "key": "Delete Workspace"}, false, []string{"no_grant"}},
	{"cross-org workspace member reads a design there", engine.AuthzDecision, map[string]any{"user": "u-heidi", "org": "org-meshery", "key": "Details of design", "resource": map[string]any{"type": "design", "id": "design-mesh"}}, true, nil},
	{"owner-only key on someone else's design", engine.AuthzDecision, map[string]any{"user": "u-ivan", "org": "org-layer5", "key": "Edit design", "resource": map[string]any{"type": "design", "id": "design-gateway"}}, false, []string{"owner_only"}},
	{"owner-only key on own design", engine.AuthzDecision, map[string]any{"user": "u-heidi", "org": "org-layer5", "key": "Edit design", "resource": map[string]any{"type": "design", "id": "design-gateway"}}, true, nil},
	{"unknown key", engine.AuthzDecision, map[string]any{"user": "u-alice", "org": "org-layer5", "key": "Fly"}, false, []string{"unknown_key"}},
	{"owner assigns Organization Admin", engine.AssignDecision, map[string]any{"actor": "u-alice", "action": "assign", "role": "Organization Admin", "user": "u-heidi", "org": "org-layer5"}, true, nil},
	{"org admin who is not owner cannot assign Organization Admin", engine.AssignDecision, map[string]any{"actor": "u-bob", "action": "assign", "role": "Organization Admin", "user": "u-heidi", "org": "org-layer5"}, false, []string{"not_permitted"}},
	{"team owner assigns Team Manager", engine.AssignDecision, map[string]any{"actor": "u-dave", "action": "assign", "role": "Team Manager", "user": "u-heidi", "org": "org-layer5", "team": "team-platform"}, true, nil},
	{"workspace admin assigns User", engine.AssignDecision, map[string]any{"actor": "u-frank", "action": "assign", "role": "User", "user": "u-trent2", "org": "org-layer5"}, true, nil},
	{"billing manager cannot assign User", engine.AssignDecision, map[string]any{"actor": "u-carol", "action": "assign", "role": "User", "user": "u-trent2", "org": "org-layer5"}, false, []string{"not_permitted"}},
	{"Free-plan user stays in one org", engine.AssignDecision, map[string]any{"actor": "u-alice", "action": "assign", "role": "User", "user": "u-oscar", "org": "org-layer5"}, false, []string{"free_plan_single_org"}},
	{"Edit User holder assigns a custom role", engine.AssignDecision, map[string]any{"actor": "u-ivan", "action": "assign", "role": "Auditor", "user": "u-heidi", "org": "org-layer5"}, true, nil},
	{"Edit User never hands out Organization Admin", engine.AssignDecision, map[string]any{"actor": "u-ivan", "action": "assign", "role": "Organization Admin", "user": "u-heidi", "org": "org-layer5"}, false, []string{"not_permitted"}},
	{"the last Provider Admin cannot be unassigned", engine.AssignDecision, map[string]any{"actor": "u-peggy", "action": "unassign", "role": "Provider Admin", "user": "u-peggy"}, false, []string{"last_provider_admin"}},
	{"deleted actor denied", engine.AssignDecision, map[string]any{"actor": "u-trent", "action": "assign", "role": "User", "user": "u-heidi", "org": "org-layer5"}, false, []string{"actor_deleted"}},
}

func demoBundle(t testing.TB, opts compiler.Options) *compiler.Bundle {
	t.Helper()
	m, err := catalog.DemoModel()
	if err != nil {
		t.Fatal(err)
	}
	out, err := compiler.Build(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func reasonsOf(v any) []string {
	obj, _ := v.(map[string]any)
	var out []string
	list, _ := obj["reasons"].([]any)
	for _, r := range list {
		out = append(out, fmt.Sprint(r))
	}
	return out
}

// TestDemoDecisions loads the built demo bundle with the real policies through OPA's rego package.
func TestDemoDecisions(t *testing.T) {
	t.Parallel()
	b, err := engine.Read(demoBundle(t, compiler.Options{}).Data, engine.Verification{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range demoCases {
		t.Run(tc.note, func(t *testing.T) {
			t.Parallel()
			v, ok, err := eng.Eval(context.Background(), tc.query, tc.input)
			if err != nil || !ok {
				t.Fatalf("eval: %v (defined %v)", err, ok)
			}
			obj := v.(map[string]any)
			if obj["allow"] != tc.allow {
				t.Fatalf("allow = %v, want %v: %v", obj["allow"], tc.allow, v)
			}
			if got := reasonsOf(v); !tc.allow && !reflect.DeepEqual(got, tc.reasons) {
				t.Errorf("reasons = %v, want %v", got, tc.reasons)
			}
			if tc.allow && tc.query == engine.AuthzDecision {
				if grants, _ := obj["grants"].([]any); len(grants) == 0 {
					t.Errorf("allowed without a grant path: %v", v)
				}
			}
		})
	}
}

// startOPAServer runs a stock `opa run --server` with the given arguments until the test ends and waits until
// its bundles are active; it returns the server's address.
func startOPAServer(t *testing.T, args ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, opaBinary(t), append([]string{"run", "--server", "--addr", addr, "--log-level", "error"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/health?bundles")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("opa did not become healthy: %s", stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// opaBinary returns the path of the opa pinned in go.mod (built by go tool if needed), so the test runs
// the opa process itself rather than a go wrapper around it.
func opaBinary(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("go", "tool", "opa", "version").CombinedOutput(); err != nil { // builds it once
		t.Fatalf("go tool opa version: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "tool", "-n", "opa").Output()
	if err != nil {
		t.Fatalf("go tool -n opa: %v", err)
	}
	return string(bytes.TrimSpace(out))
}

// TestStockOPAServerAnswersTheSame runs a stock `opa run --server --bundle` (the go.mod tool) on the built
// bundle and checks it answers every demo case as the contract says, equal to the in-process engine.
func TestStockOPAServerAnswersTheSame(t *testing.T) {
	if testing.Short() {
		t.Skip("starts opa")
	}
	t.Parallel()
	out := demoBundle(t, compiler.Options{})
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(path, out.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := startOPAServer(t, "--bundle", path)
	b, _ := engine.Read(out.Data, engine.Verification{})
	eng, err := engine.New(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range demoCases {
		body, _ := json.Marshal(map[string]any{"input": tc.input})
		urlPath := "/v1/data/keygate/authz/decision"
		if tc.query == engine.AssignDecision {
			urlPath = "/v1/data/keygate/assign/decision"
		}
		resp, err := http.Post("http://"+addr+urlPath, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Result map[string]any `json:"result"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.note, err)
		}
		if got.Result["allow"] != tc.allow {
			t.Errorf("%s: opa allow = %v, want %v", tc.note, got.Result["allow"], tc.allow)
		}
		want, _, err := eng.Eval(context.Background(), tc.query, tc.input)
		if err != nil {
			t.Fatal(err)
		}
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got.Result)
		if !bytes.Equal(wj, gj) {
			t.Errorf("%s: opa and keygate differ:\nopa     %s\nkeygate %s", tc.note, gj, wj)
		}
	}
}

// TestStockOPAVerifiesSignedBundles: a bundle signed by keygate build is accepted by a stock `opa eval -b`
// given the public key, and rejected with another key.
func TestStockOPAVerifiesSignedBundles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs opa")
	}
	t.Parallel()
	dir := t.TempDir()
	priv, pub, other := rsaKeyFiles(t, dir)
	key, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	out := demoBundle(t, compiler.Options{SigningKey: key})
	path := filepath.Join(dir, "bundle.tar.gz")
	if err := os.WriteFile(path, out.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := startOPAServer(t, "--bundle", path, "--verification-key", pub, "--verification-key-id", "keygate")
	resp, err := http.Post("http://"+addr+"/v1/data/keygate/authz/allow", "application/json",
		bytes.NewReader([]byte(`{"input": {"user": "u-alice", "org": "org-layer5", "key": "View All Teams"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Result bool `json:"result"`
	}
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || !got.Result {
		t.Fatalf("opa with the right key answered %+v (%v)", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bad, err := exec.CommandContext(ctx, opaBinary(t), "run", "--server", "--addr", "127.0.0.1:0", "--bundle", path,
		"--verification-key", other, "--verification-key-id", "keygate").CombinedOutput()
	if err == nil || !bytes.Contains(bad, []byte("verif")) {
		t.Fatalf("opa did not refuse the bundle with another key: %v: %s", err, bad)
	}
}

// rsaKeyFiles writes an RSA private key, its public key and an unrelated public key as PEM files.
func rsaKeyFiles(t *testing.T, dir string) (priv, pub, other string) {
	t.Helper()
	write := func(name string, block *pem.Block) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keys := make([]*rsa.PrivateKey, 2)
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	der, _ := x509.MarshalPKCS8PrivateKey(keys[0])
	pubDER, _ := x509.MarshalPKIXPublicKey(&keys[0].PublicKey)
	otherDER, _ := x509.MarshalPKIXPublicKey(&keys[1].PublicKey)
	return write("priv.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		write("pub.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
		write("other.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: otherDER})
}
