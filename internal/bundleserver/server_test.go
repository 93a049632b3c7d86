package bundleserver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/model"
)

// source is a test data source: the demo, optionally changed, or an error.
type source struct {
	mu    sync.Mutex
	snap  model.Snapshot
	err   error
	calls atomic.Int32
	gate  chan struct{} // when set, each read waits on it
}

func newSource(t testing.TB) *source {
	t.Helper()
	snap, err := catalog.DemoWithRoutes()
	if err != nil {
		t.Fatal(err)
	}
	return &source{snap: snap}
}

func (s *source) read(ctx context.Context) (model.Snapshot, error) {
	s.calls.Add(1)
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return model.Snapshot{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return model.Merge(model.Snapshot{}, s.snap), s.err
}

func (s *source) set(edit func(*model.Snapshot), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if edit != nil {
		edit(&s.snap)
	}
	s.err = err
}

func newServer(t testing.TB, src *source, edit func(*Config)) *Server {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Source: src.read, MaxWait: 5 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.lis.Close() })
	return s
}

// run starts s until the test ends.
func run(t testing.TB, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func get(t testing.TB, url string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	return do(t, http.MethodGet, url, headers)
}

func do(t testing.TB, method, url string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func demoRevision(t testing.TB) string {
	t.Helper()
	m, err := catalog.DemoModel()
	if err != nil {
		t.Fatal(err)
	}
	b, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b.Revision
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	src := func(context.Context) (model.Snapshot, error) { return model.Snapshot{}, nil }
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults are valid", Config{Source: src}, ""},
		{"source is required", Config{}, "source: required"},
		{"addr must be host:port", Config{Addr: "8282", Source: src}, "addr:"},
		{"negative max wait", Config{MaxWait: -time.Second, Source: src}, "max_wait:"},
		{"signing alg without key", Config{Build: compiler.Options{SigningAlg: "RS256"}, Source: src}, "build: signing_alg"},
		{"bad signing key", Config{Build: compiler.Options{SigningKey: []byte("secret"), SigningAlg: "RS256"}, Source: src}, "build: signing_key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.SetDefaults()
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	var c Config
	c.SetDefaults()
	if c.Addr != DefaultAddr || c.MaxWait != DefaultMaxWait {
		t.Errorf("defaults: addr %q max_wait %s", c.Addr, c.MaxWait)
	}
}

func TestBundleProtocol(t *testing.T) {
	t.Parallel()
	s := newServer(t, newSource(t), nil)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	url := hs.URL + BundlePath

	t.Run("503 before the first build", func(t *testing.T) {
		resp, _ := get(t, url, nil)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
		resp, body := get(t, hs.URL+"/health", nil)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no bundle") {
			t.Fatalf("health: %d %s", resp.StatusCode, body)
		}
	})
	if err := s.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	rev := demoRevision(t)
	etag := `"` + rev + `"`

	cases := []struct {
		name        string
		method      string
		headers     map[string]string
		status      int
		contentType string
		body        bool
	}{
		{"GET serves the bundle", "GET", nil, 200, gzipContentType, true},
		{"HEAD has headers only", "HEAD", nil, 200, gzipContentType, false},
		{"If-None-Match on the revision is 304", "GET", map[string]string{"If-None-Match": etag}, 304, "", false},
		{"If-None-Match unquoted is 304", "GET", map[string]string{"If-None-Match": rev}, 304, "", false},
		{"If-None-Match listing several etags is 304", "GET", map[string]string{"If-None-Match": `"old", ` + etag}, 304, "", false},
		{"stale If-None-Match gets the bundle", "GET", map[string]string{"If-None-Match": `"old"`}, 200, gzipContentType, true},
		{"OPA's first long poll gets the bundle at once", "GET",
			map[string]string{"Prefer": "modes=snapshot,delta;wait=30", "If-None-Match": ""}, 200, longPollContentType, true},
		{"OPA's prefer without wait is plain polling", "GET",
			map[string]string{"Prefer": "modes=snapshot,delta"}, 200, gzipContentType, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, url, tc.headers)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("ETag"); got != etag {
				t.Errorf("ETag %q, want %q", got, etag)
			}
			if tc.contentType != "" && resp.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.contentType)
			}
			if tc.body != (len(body) > 0) {
				t.Errorf("body of %d bytes, want body %v", len(body), tc.body)
			}
		})
	}
	t.Run("unknown bundle is 404", func(t *testing.T) {
		resp, _ := get(t, hs.URL+"/bundles/other.tar.gz", nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("health names the revision", func(t *testing.T) {
		resp, body := get(t, hs.URL+"/health", nil)
		if resp.StatusCode != 200 || !strings.Contains(string(body), rev) {
			t.Fatalf("health: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("requests are counted by code", func(t *testing.T) {
		for code, want := range map[int]float64{200: 5, 304: 3, 404: 1, 503: 1} {
			if got := value(t, s.metrics.requests[code]); got != want {
				t.Errorf("requests{code=%d} = %v, want %v", code, got, want)
			}
		}
	})
}

func TestLongPolling(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	s := newServer(t, src, func(c *Config) { c.MaxWait = 2 * time.Second })
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	if err := s.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	etag := `"` + s.Revision() + `"`
	poll := map[string]string{"Prefer": "modes=snapshot,delta;wait=30", "If-None-Match": etag}

	t.Run("times out with 304 after max_wait", func(t *testing.T) {
		start := time.Now()
		resp, _ := get(t, hs.URL+BundlePath, poll)
		took := time.Since(start)
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("status %d, want 304", resp.StatusCode)
		}
		if took < 2*time.Second || took > 4*time.Second {
			t.Errorf("answered after %s, want max_wait (2s)", took)
		}
	})
	t.Run("answers with the new revision as soon as it is built", func(t *testing.T) {
		got := make(chan *http.Response, 1)
		go func() {
			resp, _ := get(t, hs.URL+BundlePath, map[string]string{"Prefer": "wait=30", "If-None-Match": etag})
			got <- resp
		}()
		time.Sleep(200 * time.Millisecond)
		src.set(func(s *model.Snapshot) {
			s.Assignments = append(s.Assignments, model.Assignment{User: "u-heidi", Role: "Organization Admin", Org: "org-layer5"})
		}, nil)
		start := time.Now()
		if err := s.Build(context.Background()); err != nil {
			t.Fatal(err)
		}
		resp := <-got
		if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
			t.Fatalf("status %d etag %s, want 200 with a new etag", resp.StatusCode, resp.Header.Get("ETag"))
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("answered %s after the build", took)
		}
	})
}

func TestKeepsLastGoodBundle(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	s := newServer(t, src, nil)
	ctx := context.Background()
	if err := s.Build(ctx); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()
	if up := value(t, s.metrics.sourceUp); up != 1 {
		t.Fatalf("source_up %v after a good build", up)
	}
	cases := []struct {
		name     string
		edit     func(*model.Snapshot)
		err      error
		sourceUp float64
		want     string
	}{
		{"database down", nil, errors.New("connection refused"), 0, "reading the source: connection refused"},
		{"invalid data", func(s *model.Snapshot) {
			s.Assignments = append(s.Assignments, model.Assignment{User: "u-ghost", Role: "User", Org: "org-layer5"})
		}, nil, 1, "validating the data"},
	}
	for i, tc := range cases {
		src.set(tc.edit, tc.err)
		err := s.Build(ctx)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: Build = %v, want %q", tc.name, err, tc.want)
		}
		if s.Revision() != rev {
			t.Errorf("%s: revision changed to %q", tc.name, s.Revision())
		}
		if s.LastError() == nil {
			t.Errorf("%s: LastError is nil", tc.name)
		}
		if up := value(t, s.metrics.sourceUp); up != tc.sourceUp {
			t.Errorf("%s: source_up %v, want %v", tc.name, up, tc.sourceUp)
		}
		if f := value(t, s.metrics.builds.WithLabelValues("failure")); f != float64(i+1) {
			t.Errorf("%s: builds_total{failure} = %v", tc.name, f)
		}
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	resp, body := get(t, hs.URL+"/health", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "last_build_error") {
		t.Errorf("health while failing: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get(t, hs.URL+BundlePath, nil); resp.StatusCode != 200 || resp.Header.Get("ETag") != `"`+rev+`"` {
		t.Errorf("bundle while failing: %d %s", resp.StatusCode, resp.Header.Get("ETag"))
	}
}

func TestDeterministicAcrossServers(t *testing.T) {
	t.Parallel()
	var etags []string
	for range 2 {
		s := newServer(t, newSource(t), nil)
		run(t, s)
		deadline := time.Now().Add(10 * time.Second)
		for !s.Ready() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		resp, _ := get(t, s.URL(), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		etags = append(etags, resp.Header.Get("ETag"))
	}
	if etags[0] != etags[1] || etags[0] != `"`+demoRevision(t)+`"` {
		t.Fatalf("etags %q, want the same content-hash revision", etags)
	}
}

func TestTriggersCoalesce(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	gate := make(chan struct{})
	src.gate = gate
	s := newServer(t, src, nil)
	run(t, s)
	// The first build waits on the gate; triggers meanwhile must cause exactly one more build.
	deadline := time.Now().Add(5 * time.Second)
	for src.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for range 20 {
		s.Trigger()
	}
	if st := s.staleness(); st <= 0 {
		t.Errorf("staleness %v while a change waits, want > 0", st)
	}
	close(gate)
	// Wait for the second build (a loaded machine takes its time), then make sure no third one follows.
	for deadline := time.Now().Add(10 * time.Second); src.calls.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d source reads for 1 build + 20 coalesced triggers, want 2", n)
	}
	if st := s.staleness(); st != 0 {
		t.Errorf("staleness %v after the rebuild, want 0", st)
	}
}

func TestShutdownAnswersLongPolls(t *testing.T) {
	t.Parallel()
	s := newServer(t, newSource(t), func(c *Config) { c.MaxWait = time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := make(chan int, 1)
	go func() {
		resp, _ := get(t, s.URL(), map[string]string{"Prefer": "wait=60", "If-None-Match": `"` + s.Revision() + `"`})
		got <- resp.StatusCode
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if code := <-got; code != http.StatusNotModified {
		t.Errorf("long poll answered %d at shutdown, want 304", code)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s", took)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	s := newServer(t, newSource(t), nil)
	if err := s.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := []string{"keygate_build_duration_seconds", "keygate_builds_total", "keygate_build_last_success_timestamp_seconds",
		"keygate_bundle_size_bytes", "keygate_bundle_objects", "keygate_source_up", "keygate_source_staleness_seconds",
		"keygate_bundle_requests_total"}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, name := range want {
		if !have[name] {
			t.Errorf("metric %s missing", name)
		}
	}
	if v := value(t, s.metrics.objects.WithLabelValues("users")); v < 10 {
		t.Errorf("bundle_objects{kind=users} = %v", v)
	}
	if v := value(t, s.metrics.size); v <= 0 {
		t.Errorf("bundle_size_bytes = %v", v)
	}
}

// value reads a counter's or gauge's current value.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge: %v", &d)
	return 0
}
