package bundleserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/sidecar"
	"github.com/keygate/keygate/internal/store"
	"github.com/keygate/keygate/internal/synth"
)

// The benchmarks here need PostgreSQL:
//
//	KEYGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test ./internal/bundleserver -run '^$' -bench 'Flip|BuildFromDatabase' -benchtime 1x -v
//
// BenchmarkFlip makes 100 assignment changes (insert / delete, alternately) and reports the commit -> sidecar
// decision flip latency (p50, p99, max) through the real path: NOTIFY -> watcher (default debounce) -> build ->
// long poll -> OPA activation. BenchmarkBuildFromDatabase reports snapshot + resolve + compile + sign at
// KEYGATE_BENCH_USERS users (default 100000, synth data).

const (
	benchUsersEnv = "KEYGATE_BENCH_USERS"
)

// testPool returns a pool working in a fresh migrated schema (dropped at the end) and its URL.
func testPool(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	_, _, url := pgtest.Schema(tb, "keygate_bench")
	ctx := context.Background()
	pool, err := store.Open(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool); err != nil {
		tb.Fatal(err)
	}
	return pool, url
}

func rsaPair(tb testing.TB) (private []byte, publicFile string) {
	tb.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	publicFile = filepath.Join(tb.TempDir(), "verify.pem")
	if err := os.WriteFile(publicFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), publicFile
}

func BenchmarkFlip(b *testing.B) {
	const changes = 100
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, url := testPool(b)
	demo, err := catalog.DemoWithRoutes()
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Load(ctx, pool, catalog.Builtin(), demo); err != nil {
		b.Fatal(err)
	}
	signing, verify := rsaPair(b)
	srv, err := New(Config{Addr: "127.0.0.1:0", Build: compiler.Options{SigningKey: signing},
		Source: func(ctx context.Context) (model.Snapshot, error) { return store.Snapshot(ctx, pool) }}, nil)
	if err != nil {
		b.Fatal(err)
	}
	w, err := store.NewWatcher(store.Config{DatabaseURL: url}, srv.Trigger)
	if err != nil {
		b.Fatal(err)
	}
	keyFile, jwks, err := identity.GenerateDevKey(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	jwtKey, err := identity.LoadSigningKey(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := sidecar.New(ctx, sidecar.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Bundle: sidecar.BundleConfig{URL: srv.URL(), VerificationKey: verify, MinDelay: time.Second,
			MaxDelay: 2 * time.Second, LongPollTimeout: 30 * time.Second},
		Identity:     identity.Config{JWKSFile: jwks},
		DecisionLogs: sidecar.DecisionLogConfig{Disabled: true}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{}, 3)
	go func() { _ = srv.Run(ctx); done <- struct{}{} }()
	go func() { _ = w.Run(ctx); done <- struct{}{} }()
	go func() { _ = sc.Serve(ctx); done <- struct{}{} }()
	defer func() {
		cancel()
		for range 3 {
			<-done
		}
	}()
	for deadline := time.Now().Add(30 * time.Second); !sc.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("sidecar not ready after 30s")
		}
	}
	tok, err := identity.Mint(jwtKey, identity.TokenSpec{User: "u-heidi", ID: "tok-heidi", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/api/identity/orgs/org-layer5/roles",
			Headers: map[string]string{"authorization": "Bearer " + tok},
		}},
		ContextExtensions: map[string]string{"service": "identity"},
	}}
	allowed := func() bool {
		resp, err := sc.Check(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		return codes.Code(resp.GetStatus().GetCode()) == codes.OK
	}
	var roleID string
	if err := pool.QueryRow(ctx, `SELECT id FROM roles WHERE system AND name = 'Organization Admin'`).Scan(&roleID); err != nil {
		b.Fatal(err)
	}
	insert := `INSERT INTO assignments (user_id, role_id, role_scope, org_id) VALUES ('u-heidi', $1, 'organization', 'org-layer5')`
	remove := `DELETE FROM assignments WHERE user_id = 'u-heidi' AND role_id = $1`

	b.ResetTimer()
	for b.Loop() {
		var lat []time.Duration
		for i := range changes {
			sql, want := insert, true
			if i%2 == 1 {
				sql, want = remove, false
			}
			if _, err := pool.Exec(ctx, sql, roleID); err != nil {
				b.Fatal(err)
			}
			committed := time.Now()
			for allowed() != want {
				if time.Since(committed) > 10*time.Second {
					b.Fatalf("change %d: no flip within 10s", i)
				}
				time.Sleep(2 * time.Millisecond)
			}
			lat = append(lat, time.Since(committed))
		}
		slices.Sort(lat)
		p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
		b.ReportMetric(float64(p(0.5).Milliseconds()), "p50-ms")
		b.ReportMetric(float64(p(0.99).Milliseconds()), "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
		b.Logf("%d changes, commit -> sidecar flip: p50 %s, p99 %s, max %s (debounce %s)", changes,
			p(0.5).Round(time.Millisecond), p(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond),
			store.DefaultDebounce)
	}
}

func BenchmarkBuildFromDatabase(b *testing.B) {
	n := 100000
	if v := os.Getenv(benchUsersEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", benchUsersEnv, v)
		}
	}
	ctx := context.Background()
	pool, _ := testPool(b)
	data := synth.Generate(synth.Config{Users: n})
	start := time.Now()
	if err := store.Load(ctx, pool, catalog.Builtin(), data); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d users, %d assignments in %s", len(data.Users), len(data.Assignments), time.Since(start).Round(time.Millisecond))
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		b.Fatal(err)
	}
	signing, _ := rsaPair(b)
	srv, err := New(Config{Addr: "127.0.0.1:0", Build: compiler.Options{SigningKey: signing},
		Source: func(ctx context.Context) (model.Snapshot, error) { return store.Snapshot(ctx, pool) }}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		snap, err := store.Snapshot(ctx, pool)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		m, err := catalog.Resolve(snap)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		bundle, err := compiler.Build(m, srv.cfg.Build)
		if err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		b.ReportMetric(t1.Sub(t0).Seconds(), "snapshot-s")
		b.ReportMetric(t2.Sub(t1).Seconds(), "resolve-s")
		b.ReportMetric(t3.Sub(t2).Seconds(), "compile+sign-s")
		b.ReportMetric(float64(len(bundle.Data)), "bundle-bytes")
		b.Logf("%d users: snapshot %s, resolve %s, compile+sign %s, total %s, bundle %s", n,
			t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), t3.Sub(t2).Round(time.Millisecond),
			t3.Sub(t0).Round(time.Millisecond), fmt.Sprintf("%.1f MB", float64(len(bundle.Data))/1e6))
	}
	b.StopTimer()
	// The server's own build path, once, for the build metrics.
	if err := srv.Build(ctx); err != nil {
		b.Fatal(err)
	}
}
