package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/logging"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/plugins/status"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	kgengine "github.com/keygate/keygate/internal/engine"
)

// Decision paths prepared on every activation.
const (
	PathEnvoyResponse = "data.keygate.envoy.response"
	bundleName        = "keygate"
)

var preparedPaths = []string{
	PathEnvoyResponse,
	"data.keygate.authz.decision",
	"data.keygate.authz.allow",
	pathEnvoyRouted,
	"data.keygate.authz.keys",
	"data.keygate.assign.decision",
	"data.keygate.assign.assignable",
}

// queries are the prepared queries of one activation; swapped as a whole.
type queries struct {
	revision    string
	activatedAt time.Time
	response    rego.PreparedEvalQuery

	fast *fastPath // nil: every Check takes the full policy

	store    storage.Store
	compiler *ast.Compiler
	mu       sync.Mutex
	byPath   map[string]*rego.PreparedEvalQuery // data API paths, prepared on first use
}

// query returns the prepared query for a data path ("data.a.b"), preparing it on first use.
func (q *queries) query(ctx context.Context, path string) (*rego.PreparedEvalQuery, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if pq, ok := q.byPath[path]; ok {
		return pq, nil
	}
	pq, err := prepare(ctx, q.store, q.compiler, path)
	if err != nil {
		return nil, err
	}
	if len(q.byPath) < 1024 { // bounded: paths come from clients
		q.byPath[path] = pq
	}
	return pq, nil
}

func prepare(ctx context.Context, store storage.Store, compiler *ast.Compiler, path string) (*rego.PreparedEvalQuery, error) {
	pq, err := rego.New(
		rego.Query(path),
		rego.Store(store),
		rego.Compiler(compiler),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("preparing %s: %w", path, err)
	}
	return &pq, nil
}

// engine runs OPA's plugin manager with the bundle plugin and keeps the current prepared queries.
type engine struct {
	logger  *slog.Logger
	metrics *metrics
	manager *plugins.Manager
	hot     *kgengine.Hot // Checks' evaluation on manager.Store
	plugin  *bundleplugin.Plugin
	current atomic.Pointer[queries]
	onReady func()
	// responsePath is the Check's rule (Config.DecisionPath as a data reference); the fast path only
	// stands for the default, PathEnvoyResponse.
	responsePath string

	mu           sync.Mutex // serialises refresh
	lastActivate time.Time

	status     *status.Plugin     // always registered: GET /v1/status
	logs       *logs.Plugin       // nil when decision logs are off
	opaMetrics opametrics.Metrics // the logs and status plugins' counters (metrics.go reads them)
	maxAge     time.Duration      // MaxBundleAge; 0: off (or a bundle file)
	lastOK     atomic.Int64       // unix ns of the last 200/304 from the bundle server (or of the first activation)
	stale      atomic.Bool        // the bundle is older than maxAge (freshness.go)
}

// newInstanceID is the manager's id (OPA's labels.id): a random UUID per process, as stock OPA.
func newInstanceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func newEngine(cfg Config, logger *slog.Logger, m *metrics, onReady func()) (*engine, error) {
	raw, err := renderOPAConfig(cfg)
	if err != nil {
		return nil, err
	}
	ol := &opaLogger{l: logger.With("component", "opa")}
	mgr, err := plugins.New(raw, newInstanceID(), newOrderedStore(inmem.New(), bundleName, refusedOlder(logger, m)),
		plugins.Logger(ol), plugins.ConsoleLogger(ol), plugins.WithEnableTelemetry(false))
	if err != nil {
		return nil, fmt.Errorf("configuring OPA: %w", err)
	}
	mc := mgr.GetConfig()
	bcfg, err := bundleplugin.NewConfigBuilder().WithBytes(mc.Bundles).WithServices(mgr.Services()).
		WithKeyConfigs(mgr.PublicKeys()).Parse()
	if err != nil {
		return nil, fmt.Errorf("configuring the bundle plugin: %w", err)
	}
	hot, err := kgengine.NewHot(context.Background(), mgr.Store)
	if err != nil {
		return nil, err
	}
	e := &engine{logger: logger, metrics: m, manager: mgr, hot: hot, onReady: onReady, opaMetrics: opametrics.New()}
	if e.responsePath, err = DecisionRef(cfg.DecisionPath); err != nil {
		return nil, fmt.Errorf("decision_path: %w", err)
	}
	if src := bcfg.Bundles[bundleName]; src != nil && src.Service != "" && cfg.MaxBundleAge != nil {
		e.maxAge = *cfg.MaxBundleAge // a bundle file is read once: no age
	}
	e.plugin = bundleplugin.New(bcfg, mgr)
	mgr.Register(bundleplugin.Name, e.plugin)
	e.plugin.Register("keygate-sidecar", e.onStatus)

	// The status plugin always runs: GET /v1/status serves its snapshot; it reports to a service only when
	// the configuration's status section says so (OPA's semantics).
	trigger := plugins.DefaultTriggerMode
	var scfg *status.Config
	if mc.Status != nil {
		if scfg, err = status.NewConfigBuilder().WithBytes(mc.Status).WithServices(mgr.Services()).
			WithTriggerMode(&trigger).Parse(); err != nil {
			return nil, fmt.Errorf("configuring the status plugin: %w", err)
		}
	}
	if scfg == nil {
		scfg = &status.Config{Trigger: &trigger, PrometheusConfig: &status.PrometheusConfig{
			Collectors: &status.Collectors{BundleLoadDurationNanoseconds: &status.BundleLoadDurationNanoseconds{
				Buckets: []float64{1e9}}}}}
	}
	e.status = status.New(scfg, mgr).WithMetrics(e.opaMetrics)
	mgr.Register(status.Name, e.status)
	e.plugin.RegisterBulkListener("status", e.status.BulkUpdateBundleStatus)

	if mc.DecisionLogs != nil {
		lcfg, err := logs.NewConfigBuilder().WithBytes(mc.DecisionLogs).WithServices(mgr.Services()).
			WithTriggerMode(&trigger).WithLogger(ol).Parse()
		if err != nil {
			return nil, fmt.Errorf("configuring decision logs: %w", err)
		}
		if lcfg != nil {
			e.logs = logs.New(lcfg, mgr).WithMetrics(e.opaMetrics)
			mgr.Register(logs.Name, e.logs)
		}
	}
	m.watchOPA(e.opaMetrics)
	return e, nil
}

// start initialises the store, activates a persisted bundle if there is one, and starts the downloader.
func (e *engine) start(ctx context.Context) error {
	if err := e.manager.Start(ctx); err != nil {
		return fmt.Errorf("starting OPA: %w", err)
	}
	// A bundle loaded from the persistence directory during Start reports no status: look for it.
	e.refresh(ctx)
	if e.current.Load() != nil {
		e.lastOK.CompareAndSwap(0, time.Now().UnixNano()) // its age counts from now
	}
	return nil
}

// snapshot is the status plugin's document (OPA's status API format), as OPA's GET /v1/status serves it.
func (e *engine) snapshot(ctx context.Context) (*status.UpdateRequestV1, error) {
	ch := make(chan *status.UpdateRequestV1, 1)
	go func() { ch <- e.status.Snapshot() }()
	select {
	case s := <-ch:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// isStale reports whether the bundle server has not confirmed the active bundle for longer than maxAge.
func (e *engine) isStale(now time.Time) bool {
	last := e.lastOK.Load()
	return e.maxAge > 0 && last != 0 && now.Sub(time.Unix(0, last)) > e.maxAge
}

func (e *engine) stop(ctx context.Context) { e.manager.Stop(ctx) }

// trigger downloads the bundle now (tests; a manual refresh).
func (e *engine) trigger(ctx context.Context) error { return e.plugin.Trigger(ctx) }

func (e *engine) onStatus(s bundleplugin.Status) {
	switch {
	case s.Code == "":
		// A 200 (activated) or a 304: the bundle server confirmed the active bundle.
		last := s.LastSuccessfulRequest
		if last.IsZero() {
			last = time.Now()
		}
		e.lastOK.Store(last.UnixNano())
		e.metrics.lastSuccess.Set(float64(last.UnixNano()) / 1e9)
		e.refresh(context.Background())
	case s.HTTPCode != "" || strings.HasPrefix(s.Message, "request failed"):
		reason := "request"
		if s.HTTPCode != "" {
			reason = "http_status"
		}
		e.metrics.downloadFailures.WithLabelValues(reason).Inc()
		e.logger.Warn("bundle download failed", "error", s.Message, "http_code", string(s.HTTPCode))
	default:
		// A bundle arrived but was refused (size limit, signature, parse, activation): the old one keeps
		// answering.
		reason := refusedReason(s.Message)
		e.metrics.downloadFailures.WithLabelValues("refused").Inc()
		if reason != refusedOlderRevision { // the ordered store counted it already
			e.metrics.refused.WithLabelValues(reason).Inc()
		}
		e.metrics.activations.WithLabelValues("failure").Inc()
		e.logger.Warn("bundle refused", "reason", reason, "error", s.Message, "active_revision", s.ActiveRevision)
	}
}

// refusedReason classifies why a downloaded bundle was refused (keygate_bundle_refused_total's reason).
func refusedReason(msg string) string {
	switch m := strings.ToLower(msg); {
	case strings.Contains(m, "older than the active revision"):
		return refusedOlderRevision
	case strings.Contains(m, "size_limit_bytes") || strings.Contains(m, "exceeded max size"):
		return "size_limit"
	case strings.Contains(m, "signature") || strings.Contains(m, "verif") || strings.Contains(m, "digest") ||
		strings.Contains(m, "jwt") || strings.Contains(m, "keyid"):
		return "signature"
	default:
		return "invalid"
	}
}

// refresh prepares the queries against the store's current policies when a new activation happened.
func (e *engine) refresh(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	store := e.manager.Store
	var rev string
	var found bool
	err := storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		names, err := bundle.ReadBundleNamesFromStore(ctx, store, txn)
		if err != nil {
			if storage.IsNotFound(err) {
				return nil
			}
			return err
		}
		for _, n := range names {
			if n == bundleName {
				found = true
				rev, err = bundle.ReadBundleRevisionFromStore(ctx, store, txn, n)
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.logger.Error("reading the active bundle", "error", err)
		return
	}
	if !found {
		return
	}
	compiler := e.manager.GetCompiler()
	cur := e.current.Load()
	if cur != nil && cur.revision == rev && cur.compiler == compiler {
		return // a 304, or the same bundle again
	}
	q := &queries{revision: rev, activatedAt: time.Now(), store: store, compiler: compiler,
		byPath: map[string]*rego.PreparedEvalQuery{}}
	paths := preparedPaths
	if !slices.Contains(paths, e.responsePath) {
		paths = append(slices.Clip(paths), e.responsePath)
	}
	for _, p := range paths {
		pq, err := prepare(ctx, store, compiler, p)
		if err != nil {
			if p == e.responsePath {
				e.metrics.activations.WithLabelValues("failure").Inc()
				e.logger.Error("bundle has no usable Envoy decision", "revision", rev, "error", err)
				return
			}
			e.logger.Warn("decision not prepared", "path", p, "error", err)
			continue
		}
		if p == e.responsePath {
			q.response = *pq
		}
		q.byPath[p] = pq
	}
	if routed := q.byPath[pathEnvoyRouted]; routed != nil && e.responsePath == PathEnvoyResponse {
		fp, err := newFastPath(ctx, store, routed)
		if err != nil {
			e.logger.Warn("fast path disabled for this bundle", "revision", rev, "error", err)
		}
		q.fast = fp
	}
	if err := e.hot.Warm(ctx); err != nil {
		e.logger.Warn("reading the catalogue for the hot path", "revision", rev, "error", err)
	}
	e.current.Store(q)
	e.metrics.activations.WithLabelValues("success").Inc()
	e.metrics.bundleInfo.Reset()
	e.metrics.bundleInfo.WithLabelValues(rev).Set(1)
	e.metrics.activatedAt.Set(float64(q.activatedAt.UnixNano()) / 1e9)
	e.metrics.ready.Set(1)
	e.logger.Info("bundle activated", "revision", rev)
	if cur == nil && e.onReady != nil {
		e.onReady()
	}
}

// opaLogger routes OPA's logs to slog.
type opaLogger struct {
	l      *slog.Logger
	fields []any
	level  atomic.Uint32
}

func (o *opaLogger) log(level slog.Level, format string, a []any) {
	if !o.l.Enabled(context.Background(), level) {
		return
	}
	o.l.Log(context.Background(), level, fmt.Sprintf(format, a...), o.fields...)
}

func (o *opaLogger) Debug(f string, a ...any) { o.log(slog.LevelDebug, f, a) }
func (o *opaLogger) Info(f string, a ...any)  { o.log(slog.LevelInfo, f, a) }
func (o *opaLogger) Warn(f string, a ...any)  { o.log(slog.LevelWarn, f, a) }
func (o *opaLogger) Error(f string, a ...any) { o.log(slog.LevelError, f, a) }

func (o *opaLogger) WithFields(m map[string]any) logging.Logger {
	n := &opaLogger{l: o.l, fields: append([]any(nil), o.fields...)}
	for k, v := range m {
		n.fields = append(n.fields, k, v)
	}
	return n
}

func (o *opaLogger) GetLevel() logging.Level  { return logging.Level(o.level.Load()) }
func (o *opaLogger) SetLevel(l logging.Level) { o.level.Store(uint32(l)) }

var errNoBundle = errors.New("no bundle activated")
