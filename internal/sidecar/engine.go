package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
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

	mu           sync.Mutex // serialises refresh
	lastActivate time.Time
}

// opaConfig renders the OPA configuration for the bundle source.
func opaConfig(b BundleConfig) ([]byte, error) {
	src := map[string]any{}
	cfg := map[string]any{"bundles": map[string]any{bundleName: src}}
	if b.URL != "" {
		u, err := url.Parse(b.URL)
		if err != nil {
			return nil, err
		}
		svc := map[string]any{"url": u.Scheme + "://" + u.Host}
		if b.Token != "" {
			svc["credentials"] = map[string]any{"bearer": map[string]any{"token": b.Token}}
		}
		cfg["services"] = map[string]any{bundleName: svc}
		resource := u.EscapedPath()
		if u.RawQuery != "" {
			resource += "?" + u.RawQuery
		}
		src["service"] = bundleName
		src["resource"] = snapshotsOnly(b, resource)
		polling := map[string]any{
			"min_delay_seconds": int64(b.MinDelay / time.Second),
			"max_delay_seconds": int64(b.MaxDelay / time.Second),
		}
		if b.LongPollTimeout > 0 {
			polling["long_polling_timeout_seconds"] = int64(b.LongPollTimeout / time.Second)
		}
		src["polling"] = polling
		if b.PersistDir != "" {
			src["persist"] = true
			cfg["persistence_directory"] = b.PersistDir
		}
	} else {
		abs, err := filepath.Abs(b.File)
		if err != nil {
			return nil, err
		}
		src["resource"] = "file://" + filepath.ToSlash(abs)
	}
	if b.VerificationKey != "" {
		key, err := os.ReadFile(b.VerificationKey)
		if err != nil {
			return nil, fmt.Errorf("bundle.verification_key: %w", err)
		}
		alg := b.VerificationAlg
		if alg == "" {
			alg = DefaultVerificationAlg(key)
		}
		cfg["keys"] = map[string]any{b.VerificationKeyID: map[string]any{
			"algorithm": alg, "key": string(key),
		}}
		src["signing"] = map[string]any{"keyid": b.VerificationKeyID}
	}
	return json.Marshal(cfg)
}

func newEngine(cfg BundleConfig, logger *slog.Logger, m *metrics, onReady func()) (*engine, error) {
	raw, err := opaConfig(cfg)
	if err != nil {
		return nil, err
	}
	ol := &opaLogger{l: logger.With("component", "opa")}
	mgr, err := plugins.New(raw, "keygate-sidecar", newOrderedStore(inmem.New(), bundleName, refusedOlder(logger, m)),
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
	e := &engine{logger: logger, metrics: m, manager: mgr, hot: hot, onReady: onReady}
	e.plugin = bundleplugin.New(bcfg, mgr)
	mgr.Register(bundleplugin.Name, e.plugin)
	e.plugin.Register("keygate-sidecar", e.onStatus)
	return e, nil
}

// start initialises the store, activates a persisted bundle if there is one, and starts the downloader.
func (e *engine) start(ctx context.Context) error {
	if err := e.manager.Start(ctx); err != nil {
		return fmt.Errorf("starting OPA: %w", err)
	}
	// A bundle loaded from the persistence directory during Start reports no status: look for it.
	e.refresh(ctx)
	return nil
}

func (e *engine) stop(ctx context.Context) { e.manager.Stop(ctx) }

// trigger downloads the bundle now (tests; a manual refresh).
func (e *engine) trigger(ctx context.Context) error { return e.plugin.Trigger(ctx) }

func (e *engine) onStatus(s bundleplugin.Status) {
	if s.Code != "" && !strings.HasPrefix(s.Message, "request failed") && s.HTTPCode == "" {
		// A bundle arrived but was rejected (signature, parse, activation): the old one keeps answering.
		e.metrics.activations.WithLabelValues("failure").Inc()
		e.logger.Warn("bundle rejected", "error", s.Message, "active_revision", s.ActiveRevision)
		return
	}
	if s.Code != "" {
		e.logger.Warn("bundle download failed", "error", s.Message, "http_code", string(s.HTTPCode))
		return
	}
	e.refresh(context.Background())
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
	for _, p := range preparedPaths {
		pq, err := prepare(ctx, store, compiler, p)
		if err != nil {
			if p == PathEnvoyResponse {
				e.metrics.activations.WithLabelValues("failure").Inc()
				e.logger.Error("bundle has no usable Envoy decision", "revision", rev, "error", err)
				return
			}
			e.logger.Warn("decision not prepared", "path", p, "error", err)
			continue
		}
		if p == PathEnvoyResponse {
			q.response = *pq
		}
		q.byPath[p] = pq
	}
	if routed := q.byPath[pathEnvoyRouted]; routed != nil {
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
