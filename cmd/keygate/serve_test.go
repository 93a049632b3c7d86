package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/seed"
	"github.com/keygate/keygate/internal/tlsconfig"
)

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// demoSeedFile writes the embedded demo with routes as a seed file.
func demoSeedFile(t *testing.T) string {
	t.Helper()
	snap, err := catalog.DemoWithRoutes()
	if err != nil {
		t.Fatal(err)
	}
	y, err := seed.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "demo.yaml")
	if err := os.WriteFile(p, y, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var revisionRe = regexp.MustCompile(`revision ([0-9]+-[0-9a-f]+)`)

// buildRevision runs keygate build with args and returns the revision it reports.
func buildRevision(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	args = append([]string{"build", "-o", filepath.Join(t.TempDir(), "b.tar.gz")}, args...)
	if code := run(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("keygate %v: exit %d: %s", args, code, errb.String())
	}
	m := revisionRe.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no revision in %q", out.String())
	}
	return m[1]
}

// serveUntilReady runs keygate serve with args on addr and returns the bundle's ETag and a stop function that
// checks the clean exit.
func serveUntilReady(t *testing.T, addr string, args ...string) (etag string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"serve", "--addr", addr}, args...), &out, &errb) }()
	stop = func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d: %s", code, errb.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15s")
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/bundles/keygate.tar.gz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return resp.Header.Get("ETag"), stop
			}
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("no bundle after 30s: %v; stderr: %s", err, errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeRejectsBadUsage(t *testing.T) {
	t.Parallel()
	seedFile := demoSeedFile(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no source", []string{"serve"}, "--seed FILE or --database-url"},
		{"both sources", []string{"serve", "--seed", seedFile, "--database-url", "postgres://h/db"}, "not both"},
		{"signing key missing", []string{"serve", "--seed", seedFile, "--signing-key", "/nonexistent.pem"}, "--signing-key"},
		{"alg without key", []string{"serve", "--seed", seedFile, "--signing-alg", "RS256"}, "signing_alg"},
		{"bad addr", []string{"serve", "--seed", seedFile, "--addr", "8282"}, "addr"},
		{"bad database url", []string{"serve", "--database-url", "postgres://h:notaport/db"}, "--database-url"},
		{"negative debounce", []string{"serve", "--database-url", "postgres://h/db", "--debounce", "-1s"}, "debounce"},
		{"missing token file", []string{"serve", "--seed", seedFile, "--token-file", "/nonexistent-tokens"}, "auth.token_files"},
		{"tls key without cert", []string{"serve", "--seed", seedFile, "--tls-key", "k.pem"}, "tls.cert_file"},
		{"missing certificate", []string{"serve", "--seed", seedFile, "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent-key.pem"}, "tls:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 naming %q", code, errb.String(), tc.want)
			}
		})
	}
}

func TestServeSeedMatchesBuild(t *testing.T) {
	t.Parallel()
	seedFile := demoSeedFile(t)
	rev := buildRevision(t, "--seed", seedFile)
	if demo := buildRevision(t); demo != rev {
		t.Fatalf("seed file of the demo builds revision %s, embedded demo %s", rev, demo)
	}
	etag, stop := serveUntilReady(t, freeAddr(t), "--seed", seedFile)
	stop()
	if etag != `"`+rev+`"` {
		t.Fatalf("serve's ETag %s, keygate build's revision %s", etag, rev)
	}
}

func TestServeWithTheDatabaseDown(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	down := "postgres://postgres@" + freeAddr(t) + "/test?sslmode=disable&connect_timeout=1"
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--addr", addr, "--database-url", down}, &out, &errb) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get("/health")
		_, metrics := get("/metrics")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "reading the source") &&
			strings.Contains(metrics, "keygate_source_up 0") && regexp.MustCompile(`keygate_builds_total\{result="failure"\} [1-9]`).MatchString(metrics) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %d %q; metrics:\n%s", code, body, metrics)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := get("/bundles/keygate.tar.gz"); code != http.StatusServiceUnavailable {
		t.Errorf("bundle: %d before any build, want 503", code)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d: %s", code, errb.String())
	}
}

// TestServeSeedWithoutRoutesGetsTheIdentityRoutes: bundles/demo.yaml lists no routes; served, it carries the
// built-in identity API route table (as keygate dev does), so Envoy's requests are not all route_not_found.
func TestServeSeedWithoutRoutesGetsTheIdentityRoutes(t *testing.T) {
	t.Parallel()
	demo, err := catalog.Demo()
	if err != nil {
		t.Fatal(err)
	}
	if len(demo.Routes) != 0 {
		t.Fatalf("the demo seed has %d routes; this test needs one without", len(demo.Routes))
	}
	if got, want := buildRevision(t, "--seed", "../../bundles/demo.yaml"), buildRevision(t); got != want {
		t.Errorf("bundles/demo.yaml builds revision %s, the embedded demo with routes %s", got, want)
	}
	etag, stop := serveUntilReady(t, freeAddr(t), "--seed", "../../bundles/demo.yaml")
	stop()
	if want := `"` + buildRevision(t) + `"`; etag != want {
		t.Errorf("serve --seed bundles/demo.yaml: ETag %s, want the demo with routes %s", etag, want)
	}
	// A seed with routes of its own keeps only those.
	withRoutes := filepath.Join(t.TempDir(), "one-route.yaml")
	if err := os.WriteFile(withRoutes, []byte("routes:\n- {service: identity, method: GET, path: /api/identity/orgs, key: View Organizations}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := readSeed(withRoutes, nil)
	if err != nil || len(snap.Routes) != 1 {
		t.Errorf("a seed with one route: %d routes, %v", len(snap.Routes), err)
	}
}

// TestServeSeedReloads: keygate serve --seed FILE --watch serves a changed file within seconds; SIGHUP re-reads
// it too; a bad file keeps the last good bundle and says why on /health.
func TestServeSeedReloads(t *testing.T) {
	seedFile := demoSeedFile(t)
	addr := freeAddr(t)
	etag, stop := serveUntilReady(t, addr, "--seed", seedFile, "--watch")
	defer stop()
	original, err := os.ReadFile(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	write := func(data string) {
		t.Helper()
		if err := os.WriteFile(seedFile, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// --watch: an appended token changes the bundle.
	write(string(original) + "\n# edited\n")
	write(strings.Replace(string(original), "tokens:\n", "tokens:\n- {id: tok-watch, user: u-alice}\n", 1))
	watched, took := nextRevision(t, addr, etag, 10*time.Second)
	t.Logf("--watch: new revision %s after the edit", took.Round(time.Millisecond))

	// A bad file: the last good bundle stays, /health names the error.
	write("users: [{id: u-x, plan: galaxy}]\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && strings.Contains(b.String(), "last_build_error") && strings.Contains(b.String(), strings.Trim(watched, `"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health after a bad edit: %d %s", resp.StatusCode, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// SIGHUP re-reads the file (here: back to the original).
	write(string(original))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if back, _ := nextRevision(t, addr, watched, 10*time.Second); back != etag {
		t.Errorf("after SIGHUP and the original file: ETag %s, want the first one %s", back, etag)
	}
}

// TestServeTLSAndTokens: keygate serve with --tls-cert/--tls-key/--tls-client-ca and --token-file serves
// HTTPS, /health to anyone, the bundle to the token or the client certificate and 401 to others.
func TestServeTLSAndTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki, err := tlsconfig.GenerateDev(dir)
	if err != nil {
		t.Fatal(err)
	}
	const token = "serve-test-token-0123456789"
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--seed", demoSeedFile(t), "--addr", addr, "--tls-cert", pki.ServerCert,
			"--tls-key", pki.ServerKey, "--tls-client-ca", pki.CA, "--token-file", tokens}, &out, &errb)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, errb.String())
		}
	}()
	anon := curlTLS(t, pki.CA, "", "")
	base := "https://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := anon.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no healthy server after 30s: %v; stderr %s", err, errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := fetch(t, anon, http.MethodGet, base+"/bundles/keygate.tar.gz", "", ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := fetch(t, anon, http.MethodGet, base+"/bundles/keygate.tar.gz", "Bearer garbage", ""); code != http.StatusUnauthorized {
		t.Errorf("garbage token: %d, want 401", code)
	}
	if code, _ := fetch(t, anon, http.MethodGet, base+"/bundles/keygate.tar.gz", "Bearer "+token, ""); code != http.StatusOK {
		t.Errorf("token: %d, want 200", code)
	}
	withCert := curlTLS(t, pki.CA, pki.ClientCert, pki.ClientKey)
	if code, _ := fetch(t, withCert, http.MethodGet, base+"/bundles/keygate.tar.gz", "", ""); code != http.StatusOK {
		t.Errorf("client certificate: %d, want 200", code)
	}
}
