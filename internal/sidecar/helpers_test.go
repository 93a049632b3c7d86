package sidecar

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/model"
)

// demoModel is the demo dataset with the identity API routes, optionally changed by edit.
func demoModel(t testing.TB, edit func(*model.Snapshot)) *model.Model {
	t.Helper()
	snap, err := catalog.DemoWithRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&snap)
	}
	m, err := catalog.Resolve(snap)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// signingPair is an RSA bundle-signing key: the private PEM for the compiler, the public PEM file for the
// sidecar.
type signingPair struct {
	private []byte
	pubFile string
}

func newSigningPair(t testing.TB) signingPair {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	pubFile := filepath.Join(t.TempDir(), "bundle-verify.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return signingPair{private: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pubFile: pubFile}
}

func build(t testing.TB, m *model.Model, key []byte) *compiler.Bundle {
	t.Helper()
	b, err := compiler.Build(m, compiler.Options{SigningKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bundleServer serves one bundle with OPA's ETag protocol and counts answers by status code.
type bundleServer struct {
	*httptest.Server
	mu       sync.Mutex
	data     []byte
	etag     string
	codes    map[int]int
	requests atomic.Int32
}

func newBundleServer(t testing.TB, data []byte, etag string) *bundleServer {
	bs := &bundleServer{data: data, etag: etag, codes: map[int]int{}}
	bs.Server = httptest.NewServer(http.HandlerFunc(bs.serve))
	t.Cleanup(bs.Close)
	return bs
}

func (bs *bundleServer) set(data []byte, etag string) {
	bs.mu.Lock()
	bs.data, bs.etag = data, etag
	bs.mu.Unlock()
}

func (bs *bundleServer) count(code int) int {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.codes[code]
}

func (bs *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	bs.requests.Add(1)
	bs.mu.Lock()
	data, etag := bs.data, `"`+bs.etag+`"`
	code := http.StatusOK
	if r.Header.Get("If-None-Match") == etag {
		code = http.StatusNotModified
	}
	bs.codes[code]++
	bs.mu.Unlock()
	w.Header().Set("ETag", etag)
	if code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	_, _ = w.Write(data)
}

// devIdentity is a JWT signing key plus the JWKS file the sidecar verifies with.
type devIdentity struct {
	key      jwk.Key
	jwksFile string
}

func newDevIdentity(t testing.TB) devIdentity {
	t.Helper()
	keyPath, jwksPath, err := identity.GenerateDevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return devIdentity{key: key, jwksFile: jwksPath}
}

func (d devIdentity) token(t testing.TB, user, jti string, ttl time.Duration) string {
	t.Helper()
	tok, err := identity.Mint(d.key, identity.TokenSpec{User: user, ID: jti, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startSidecar runs a sidecar on loopback ports until the test ends.
func startSidecar(t testing.TB, cfg Config) *Sidecar {
	t.Helper()
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.Bundle.MinDelay == 0 {
		cfg.Bundle.MinDelay, cfg.Bundle.MaxDelay = time.Hour, time.Hour // tests trigger downloads
	}
	if _, bench := t.(*testing.B); !bench && cfg.CheckTimeout == 0 {
		// Tests assert answers, not the production deadline (100 ms), which a loaded machine can miss;
		// benchmarks keep the production setting.
		cfg.CheckTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, testLogger(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// runBundleServer runs keygate's bundle server until the test ends (or until the returned stop, which may be
// called earlier to cut it), and waits for its first bundle.
func runBundleServer(t testing.TB, srv *bundleserver.Server) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("bundle server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, "the bundle server", srv.Ready)
	return stop
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t testing.TB, s *Sidecar) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func checkReq(method, path, service string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: headers, Host: "api.local", Scheme: "http",
		}},
		ContextExtensions: map[string]string{"service": service},
	}}
}

type identityConfig = identity.Config

func mintAt(d devIdentity, user, jti string, now time.Time, ttl time.Duration) (string, error) {
	return identity.Mint(d.key, identity.TokenSpec{User: user, ID: jti, TTL: ttl, Now: now})
}
