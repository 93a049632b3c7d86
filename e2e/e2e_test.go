//go:build e2e

// Package e2e runs keygate end to end, as deployed (deploy/kubernetes): PostgreSQL -> `keygate serve` ->
// `keygate authz` as separate processes of a freshly built binary, driven by an ext_authz gRPC client acting as
// Envoy. Run with `make e2e` (go test -tags e2e -run E2E ./e2e/...); it needs KEYGATE_TEST_DATABASE_URL.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/pgtest"
)

// freshSchema creates a schema dropped when the test ends and returns the URL whose connections use it, and
// a connection in it.
func freshSchema(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	_, _, url := pgtest.Schema(t, "keygate_e2e")
	conn, err := pgx.Connect(context.Background(), url) // pgx sends search_path as a run-time parameter
	if err != nil {
		t.Fatalf("connecting to %s: %v", pgtest.Env, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return url, conn
}

// buildKeygate compiles the binary under test.
func buildKeygate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keygate")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/keygate/keygate/cmd/keygate").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// keygate runs a short keygate command and fails the test unless it exits 0.
func keygate(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keygate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// daemon is a long-running keygate process, stopped with SIGTERM when the test ends; its output is logged
// if the test failed.
type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func start(t *testing.T, bin, name string, env []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, cmd: exec.Command(bin, args...), out: &bytes.Buffer{}, done: make(chan error, 1)}
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) stop(t *testing.T) {
	if d.cmd.ProcessState == nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Errorf("%s exited with %v", d.name, err)
		}
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		t.Errorf("%s did not stop within 15s of SIGTERM", d.name)
	}
	if t.Failed() {
		t.Logf("%s output:\n%s", d.name, d.out.String())
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHTTP(t *testing.T, what, url string, d ...*daemon) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		for _, p := range d {
			select {
			case err := <-p.done:
				p.done <- err
				t.Fatalf("%s exited (%v) while waiting for %s:\n%s", p.name, err, what, p.out.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60s (last: %v)", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bundleKeys writes an RSA bundle signing key and its public key, as the keygate-signing-key and
// keygate-verification-key Secrets hold them.
func bundleKeys(t *testing.T, dir string) (private, public string) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	private, public = filepath.Join(dir, "signing-key.pem"), filepath.Join(dir, "verification-key.pem")
	if err := os.WriteFile(private, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return private, public
}

// envoy sends CheckRequests as Envoy's ext_authz filter does for the identity service's routes.
type envoy struct {
	c   authv3.AuthorizationClient
	key jwk.Key
}

func (e envoy) check(t *testing.T, method, path, user, jti string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	h := map[string]string{}
	for k, v := range headers {
		h[k] = v
	}
	if user != "" {
		tok, err := identity.Mint(e.key, identity.TokenSpec{User: user, ID: jti, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		h["authorization"] = "Bearer " + tok
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: h, Host: "identity.keygate.svc", Scheme: "http", Protocol: "HTTP/1.1",
		}},
		ContextExtensions: map[string]string{"service": "identity"},
	}})
	if err != nil {
		t.Fatalf("Check %s %s: %v", method, path, err)
	}
	return resp
}

func TestE2E(t *testing.T) {
	dbURL, conn := freshSchema(t)
	bin := buildKeygate(t)
	dir := t.TempDir()
	dbEnv := []string{"KEYGATE_DATABASE_URL=" + dbURL} // as the bundle server's Deployment passes it

	keygate(t, bin, dbEnv, "migrate")
	out := keygate(t, bin, dbEnv, "db", "load")
	t.Logf("keygate db load: %s", strings.TrimSpace(out))

	signingKey, verificationKey := bundleKeys(t, dir)
	jwtKey, jwksFile, err := identity.GenerateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.LoadSigningKey(jwtKey)
	if err != nil {
		t.Fatal(err)
	}

	bundleAddr, grpcAddr, httpAddr := freePort(t), freePort(t), freePort(t)
	serve := start(t, bin, "keygate serve", dbEnv, "serve", "--addr="+bundleAddr, "--signing-key="+signingKey)
	waitHTTP(t, "bundle server", "http://"+bundleAddr+"/health", serve)
	authz := start(t, bin, "keygate authz", nil, "authz",
		"--bundle-url=http://"+bundleAddr+"/bundles/keygate.tar.gz",
		"--verification-key="+verificationKey,
		"--grpc-addr="+grpcAddr,
		"--http-addr="+httpAddr,
		"--jwks-file="+jwksFile,
		"--long-poll=30s", // the bundle server holds the request until a new revision: changes arrive in ~100ms
	)
	waitHTTP(t, "sidecar", "http://"+httpAddr+"/health?bundles", authz, serve)

	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ev := envoy{c: authv3.NewAuthorizationClient(cc), key: key}

	type want struct {
		code   codes.Code
		reason string
	}
	allow := want{code: codes.OK}
	cases := []struct {
		name, method, path, user, jti string
		headers                       map[string]string
		want                          want
	}{
		{"org admin lists the org's teams", "GET", "/api/identity/orgs/org-layer5/teams", "u-alice", "tok-alice", nil, allow},
		{"org admin lists the org's users", "GET", "/api/identity/orgs/org-layer5/users", "u-bob", "", nil, allow},
		{"owner deletes the org", "DELETE", "/api/identity/orgs/org-layer5", "u-alice", "", nil, allow},
		{"non-owner admin may not delete the org", "DELETE", "/api/identity/orgs/org-layer5", "u-bob", "", nil,
			want{codes.PermissionDenied, "owner_required"}},
		{"team admin edits the team", "PUT", "/api/identity/orgs/org-layer5/teams/team-platform", "u-dave", "", nil, allow},
		{"user may not create custom roles", "POST", "/api/identity/orgs/org-layer5/roles", "u-heidi", "tok-heidi", nil,
			want{codes.PermissionDenied, "no_grant"}},
		{"no access to another org", "GET", "/api/identity/orgs/org-meshery/users", "u-alice", "", nil,
			want{codes.PermissionDenied, ""}},
		{"profile with the org header", "GET", "/api/identity/users/profile", "u-heidi", "",
			map[string]string{"x-current-orgid": "org-layer5"}, allow},
		{"no token", "GET", "/api/identity/orgs/org-layer5/teams", "", "", nil, want{codes.Unauthenticated, "unauthenticated"}},
		{"revoked token", "GET", "/api/identity/orgs/org-layer5/teams", "u-bob", "tok-bob-revoked", nil,
			want{codes.Unauthenticated, "token_revoked"}},
		{"deleted user", "GET", "/api/identity/orgs/org-layer5/teams", "u-trent", "", nil, want{codes.Unauthenticated, "user_deleted"}},
		{"unknown route", "GET", "/api/identity/nowhere", "u-alice", "", nil, want{codes.PermissionDenied, "route_not_found"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := ev.check(t, tc.method, tc.path, tc.user, tc.jti, tc.headers)
			if got := codes.Code(resp.GetStatus().GetCode()); got != tc.want.code {
				t.Fatalf("status %s, want %s: %v", got, tc.want.code, resp)
			}
			if tc.want.reason != "" && !strings.Contains(resp.GetDeniedResponse().GetBody(), `"`+tc.want.reason+`"`) {
				t.Errorf("denial %q does not name %s", resp.GetDeniedResponse().GetBody(), tc.want.reason)
			}
		})
	}

	t.Run("bundle server metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + bundleAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		for _, series := range []string{"keygate_source_up 1", `keygate_builds_total{result="success"}`,
			`keygate_bundle_requests_total{code="200"}`, `keygate_bundle_objects{kind="users"} 15`} {
			if !strings.Contains(body.String(), series) {
				t.Errorf("/metrics lacks %s", series)
			}
		}
	})

	t.Run("a committed assignment flips the decision within 5s", func(t *testing.T) {
		ctx := context.Background()
		var roleID string
		if err := conn.QueryRow(ctx, `SELECT id FROM roles WHERE system AND name = 'Organization Admin'`).Scan(&roleID); err != nil {
			t.Fatal(err)
		}
		flip := func(what, sql string, wantCode codes.Code) time.Duration {
			if _, err := conn.Exec(ctx, sql, roleID); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			committed := time.Now() // autocommit: Exec returns after the commit
			for {
				resp := ev.check(t, "POST", "/api/identity/orgs/org-layer5/roles", "u-heidi", "tok-heidi", nil)
				if codes.Code(resp.GetStatus().GetCode()) == wantCode {
					return time.Since(committed)
				}
				if time.Since(committed) > 5*time.Second {
					t.Fatalf("%s: the decision did not flip within 5s of the commit", what)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		grant := flip("insert", `INSERT INTO assignments (user_id, role_id, role_scope, org_id)
			VALUES ('u-heidi', $1, 'organization', 'org-layer5')`, codes.OK)
		t.Logf("commit -> Check flip (deny -> allow): %s", grant.Round(time.Millisecond))
		revoke := flip("delete", `DELETE FROM assignments WHERE user_id = 'u-heidi' AND role_id = $1`, codes.PermissionDenied)
		t.Logf("commit -> Check flip (allow -> deny): %s", revoke.Round(time.Millisecond))
	})
}
