package bundleserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/tracing"
)

// Content types of bundle responses. OPA's downloader keeps long polling only while the server answers with
// longPollContentType.
const (
	gzipContentType     = "application/gzip"
	longPollContentType = "application/vnd.openpolicyagent.bundles"
)

// Server builds and serves the bundle. New configures it; Run serves it.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	lis     net.Listener
	http    *http.Server
	history *history // retained revisions for delta bundles; nil when deltas are off
	auth    *authenticator

	state    atomic.Pointer[state] // the served bundle and the channel closed when it is replaced
	trigger  chan struct{}         // buffered(1): coalesces triggers
	stopping chan struct{}         // closed when Run starts shutting down: long polls answer at once
	buildMu  sync.Mutex            // one build at a time

	mu         sync.Mutex
	building   bool
	dirtySince time.Time // first change not yet in the served bundle (zero: up to date)
	nextDirty  time.Time // first change notified while the current build runs
	lastErr    error     // the last build's error (nil after a success)
	sourceErr  error     // why the source is down (nil while up)
	sourceOK   time.Time // the last time the source answered (a probe or a build)
}

// errSource marks a build that failed reading the source: it is retried with a short backoff.
var errSource = errors.New("reading the source")

// state is an immutable view: the served bundle (nil before the first build) and a channel closed when a
// new revision replaces it.
type state struct {
	bundle *served
	next   chan struct{}
}

type served struct {
	data     []byte
	revision string
	etag     string // `"<revision>"`
}

// New validates cfg and opens the listener (so Addr is known before Run). Nothing is built or served until
// Run.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bundle server config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, logger: logger, trigger: make(chan struct{}, 1), stopping: make(chan struct{}),
		sourceOK: time.Now()}
	if cfg.Deltas.enabled(len(cfg.Build.SigningKey) > 0) {
		s.history = newHistory(cfg.Deltas)
	}
	s.metrics = newMetrics(s.staleness, s.history)
	s.state.Store(&state{next: make(chan struct{})})
	// Without a certificate a client may still authenticate with a token: client certificates are
	// verified when given, and the handler decides.
	tlsCfg, err := cfg.TLS.Load(tls.VerifyClientCertIfGiven)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if s.auth, err = newAuthenticator(cfg); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("addr: %w", err)
	}
	s.lis = lis
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		TLSConfig: tlsCfg, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	return s, nil
}

// Close releases the listener of a server that will not Run (Run closes it itself).
func (s *Server) Close() error { return s.lis.Close() }

// Addr is the listener's address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// URL is the bundle's URL on this server (https with TLS).
func (s *Server) URL() string {
	scheme := "http://"
	if s.cfg.TLS.Enabled() {
		scheme = "https://"
	}
	return scheme + s.Addr().String() + BundlePath
}

// Revision is the served bundle's revision, "" before the first successful build.
func (s *Server) Revision() string {
	if b := s.state.Load().bundle; b != nil {
		return b.revision
	}
	return ""
}

// Ready reports whether a bundle is served.
func (s *Server) Ready() bool { return s.state.Load().bundle != nil }

// LastError is the last build's error, nil after a successful build.
func (s *Server) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Trigger asks for a rebuild (the data may have changed). It never blocks: triggers arriving while a build
// waits or runs cause one more build.
func (s *Server) Trigger() {
	now := time.Now()
	s.mu.Lock()
	if s.dirtySince.IsZero() {
		s.dirtySince = now
	}
	if s.building && s.nextDirty.IsZero() {
		s.nextDirty = now
	}
	s.mu.Unlock()
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// SourceUp reports whether the source answered its last probe or read, and the error when it did not.
func (s *Server) SourceUp() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sourceErr == nil, s.sourceErr
}

// setSource records the outcome of a probe or a source read: keygate_source_up, the error /health reports
// and, when the source goes down, the start of the staleness it may cause (the last time it answered: a
// change committed since may be missing from the served bundle). It reports whether the source came back.
func (s *Server) setSource(err error) (cameBack bool) {
	now := time.Now()
	s.mu.Lock()
	wasDown := s.sourceErr != nil
	s.sourceErr = err
	if err == nil {
		s.sourceOK = now
	} else if s.dirtySince.IsZero() {
		s.dirtySince = s.sourceOK
	}
	s.mu.Unlock()
	if err != nil {
		s.metrics.sourceUp.Set(0)
		if !wasDown {
			s.logger.Warn("bundle source is down; serving the last good bundle", "error", err, "revision", s.Revision())
		}
		return false
	}
	s.metrics.sourceUp.Set(1)
	if wasDown {
		s.logger.Info("bundle source is back")
	}
	return wasDown
}

// Changed returns a channel closed when a new revision replaces the one served now.
func (s *Server) Changed() <-chan struct{} { return s.state.Load().next }

func (s *Server) staleness() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirtySince.IsZero() {
		return 0
	}
	return time.Since(s.dirtySince).Seconds()
}

// Run builds the first bundle, serves HTTP and rebuilds on Trigger until ctx ends, then shuts down: long
// polls are answered, the HTTP server is shut down gracefully (closed after ShutdownTimeout) and the build
// loop stops. It returns nil after a shutdown caused by ctx.
func (s *Server) Run(ctx context.Context) error {
	loopCtx, stopLoop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.buildLoop(loopCtx) })
	if s.cfg.Probe != nil {
		wg.Go(func() { s.probeLoop(loopCtx) })
	}

	errc := make(chan error, 1)
	go func() {
		serve := s.http.Serve
		if s.http.TLSConfig != nil {
			serve = func(l net.Listener) error { return s.http.ServeTLS(l, "", "") }
		}
		if err := serve(s.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("bundle server: %w", err)
		}
	}()
	s.logger.Info("bundle server listening", "addr", s.Addr().String(), "path", BundlePath,
		"signed", len(s.cfg.Build.SigningKey) > 0, "deltas", s.history != nil, "tls", s.cfg.TLS.Enabled(), "client_certs", s.cfg.TLS.MutualTLS(),
		"tokens", len(*s.auth.tokens.Load()))
	if !s.auth.enabled() {
		if tcp, ok := s.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
			s.logger.Warn("bundle server without authentication on a non-loopback address: anyone who reaches it "+
				"downloads users, organizations and token ids (set --token-file or --tls-client-ca; docs/security.md)",
				"addr", s.Addr().String())
		}
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.logger.Info("bundle server stopping")
	close(s.stopping)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if serr := s.http.Shutdown(shutCtx); serr != nil {
		_ = s.http.Close()
	}
	stopLoop()
	wg.Wait()
	return err
}

// buildLoop builds at once, then on every trigger. A build that failed reading the source is retried with a
// short backoff (SourceRetryMin doubling to SourceRetryMax, jittered); one that failed on the data after
// RetryInterval.
func (s *Server) buildLoop(ctx context.Context) {
	var backoff time.Duration
	for {
		err := s.Build(ctx)
		var retry <-chan time.Time
		switch {
		case err == nil || ctx.Err() != nil:
			backoff = 0
		case errors.Is(err, errSource):
			backoff = min(max(2*backoff, s.cfg.SourceRetryMin), s.cfg.SourceRetryMax)
			retry = time.After(backoff/2 + rand.N(backoff/2+1))
		case s.cfg.RetryInterval > 0:
			backoff = 0
			retry = time.After(s.cfg.RetryInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
		case <-retry:
		}
	}
}

// probeLoop runs Probe every ProbeInterval until ctx ends and triggers a rebuild when the source comes back,
// so a change committed during the outage is served as soon as the source answers.
func (s *Server) probeLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
		err := s.cfg.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			err = fmt.Errorf("probing the source: %w", err)
		}
		if s.setSource(err) {
			s.Trigger()
		}
	}
}

// Build builds the bundle now (waiting for a running build first) and activates it when its revision is new.
// On failure the previous bundle stays served and the error is recorded (LastError, metrics, log).
func (s *Server) Build(ctx context.Context) error {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.mu.Lock()
	s.building = true
	s.nextDirty = time.Time{}
	s.mu.Unlock()

	var span trace.Span
	if s.cfg.Tracer != nil {
		ctx, span = s.cfg.Tracer.StartBuild(ctx)
	}
	start := time.Now()
	rev, changed, err := s.build(ctx)
	took := time.Since(start)
	if span != nil {
		tracing.EndBuild(span, rev, took, err)
	}
	s.metrics.buildDone(err == nil, took)

	s.mu.Lock()
	s.building = false
	s.lastErr = err
	if err == nil {
		s.dirtySince = s.nextDirty
	}
	s.nextDirty = time.Time{}
	s.mu.Unlock()

	if err != nil {
		s.logger.Error("bundle build failed; serving the last good bundle", "error", err,
			"revision", s.Revision(), "duration", took)
		return err
	}
	s.metrics.lastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
	if changed {
		s.logger.Info("bundle activated", "revision", rev, "duration", took)
	} else {
		s.logger.Debug("bundle unchanged", "revision", rev, "duration", took)
	}
	return nil
}

func (s *Server) build(ctx context.Context) (rev string, changed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.BuildTimeout)
	defer cancel()
	snap, err := s.cfg.Source(ctx)
	if err != nil {
		err = fmt.Errorf("%w: %w", errSource, err)
		s.setSource(err)
		return "", false, err
	}
	s.setSource(nil)
	m, err := catalog.Resolve(snap)
	if err != nil {
		return "", false, fmt.Errorf("validating the data: %w", err)
	}
	opts := s.cfg.Build
	opts.Position = snap.Position // the revision orders builds by the source's commit position
	b, err := compiler.Build(m, opts)
	if err != nil {
		return "", false, fmt.Errorf("compiling: %w", err)
	}
	s.metrics.served(len(b.Data), m)
	old := s.state.Load()
	if old.bundle != nil && old.bundle.revision == b.Revision {
		return b.Revision, false, nil
	}
	if s.history != nil {
		s.history.add(b.Revision, b.Doc)
	}
	s.state.Store(&state{
		bundle: &served{data: b.Data, revision: b.Revision, etag: `"` + b.Revision + `"`},
		next:   make(chan struct{}),
	})
	close(old.next)
	return b.Revision, true, nil
}

// Handler is the server's HTTP handler: the bundle, /health and /metrics, behind the authentication of
// Config.Auth.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+BundlePath, s.handleBundle) // GET patterns match HEAD too
	mux.HandleFunc("/bundles/", func(w http.ResponseWriter, r *http.Request) {
		s.metrics.request(http.StatusNotFound)
		http.NotFound(w, r)
	})
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return s.auth.wrap(mux, s.metrics.request)
}

var waitPref = regexp.MustCompile(`(?:^|[\s;,])wait=(\d+)`)

// preferWait returns the long-polling wait asked for with "Prefer: ...;wait=N" (OPA sends
// "modes=snapshot,delta;wait=N"), and whether there was one.
func preferWait(r *http.Request) (time.Duration, bool) {
	for _, v := range r.Header.Values("Prefer") {
		if m := waitPref.FindStringSubmatch(v); m != nil {
			n, err := strconv.ParseInt(m[1], 10, 32)
			if err != nil {
				return 0, false
			}
			return time.Duration(n) * time.Second, true
		}
	}
	return 0, false
}

// matches reports whether an If-None-Match header names the bundle (its quoted revision, the bare
// revision, a weak form of either, or *). OPA may list several etags separated by commas.
func matches(inm string, b *served) bool {
	if inm == "" || b == nil {
		return false
	}
	for _, t := range strings.Split(inm, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == b.etag || t == b.revision {
			return true
		}
	}
	return false
}

func (s *Server) handleBundle(w http.ResponseWriter, r *http.Request) {
	wait, longPoll := preferWait(r)
	wait = min(wait, s.cfg.MaxWait)
	inm := r.Header.Get("If-None-Match")
	st := s.state.Load()
	if longPoll && wait > 0 && (st.bundle == nil || matches(inm, st.bundle)) {
		t := time.NewTimer(wait)
		select {
		case <-st.next:
		case <-t.C:
		case <-r.Context().Done():
		case <-s.stopping:
		}
		t.Stop()
		st = s.state.Load()
	}
	b := st.bundle
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	if longPoll {
		h.Set("Content-Type", longPollContentType)
	}
	if b == nil {
		s.metrics.request(http.StatusServiceUnavailable)
		h.Set("Content-Type", "application/json")
		h.Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": s.notReadyReason()})
		return
	}
	h.Set("ETag", b.etag)
	if matches(inm, b) {
		s.metrics.request(http.StatusNotModified)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if !longPoll {
		h.Set("Content-Type", gzipContentType)
	}
	body, kind := b.data, "snapshot"
	if d := s.deltaFor(r, b); d != nil {
		body, kind = d, "delta"
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	s.metrics.request(http.StatusOK)
	s.metrics.sent(kind, len(body))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func (s *Server) notReadyReason() string {
	if err := s.LastError(); err != nil {
		return "no bundle built yet: " + err.Error()
	}
	return "no bundle built yet"
}

// health is the body of /health once a bundle is served.
type health struct {
	// Status is "ok", or "degraded" while the source is down or the last build failed (the last good
	// bundle is still served).
	Status           string  `json:"status"`
	Revision         string  `json:"revision"`
	SourceUp         bool    `json:"source_up"`
	SourceError      string  `json:"source_error,omitempty"`
	StalenessSeconds float64 `json:"staleness_seconds"`
	LastBuildError   string  `json:"last_build_error,omitempty"`
}

// handleHealth: 503 with the reason before the first bundle is built. After it, 200 while a bundle is
// served, even with the source down (fail-static: sidecars keep getting the last good bundle, so readiness
// stays up), with "status": "degraded" and the source's error; /health?source answers 503 while the source
// is down, for a probe or monitor that wants the source's state as a status code (docs/decisions.md).
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	b := s.state.Load().bundle
	if b == nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": s.notReadyReason()})
		return
	}
	h := health{Status: "ok", Revision: b.revision, StalenessSeconds: s.staleness()}
	up, serr := s.SourceUp()
	h.SourceUp = up
	if serr != nil {
		h.SourceError = serr.Error()
		h.Status = "degraded"
	}
	if err := s.LastError(); err != nil {
		h.LastBuildError = err.Error()
		h.Status = "degraded"
	}
	if _, strict := r.URL.Query()["source"]; strict && !up {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}
