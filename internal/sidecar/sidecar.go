package sidecar

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"

	"github.com/keygate/keygate/internal/envoyauth"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/tracing"
)

// Sidecar is a configured sidecar; Serve runs it.
type Sidecar struct {
	authv3.UnimplementedAuthorizationServer

	cfg      Config
	logger   *slog.Logger
	metrics  *metrics
	engine   *engine
	verifier *identity.Verifier
	pool     *pool
	logs     *decisionLog
	tracer   *tracing.Tracer // nil: tracing off
	health   *health.Server
	ready    atomic.Bool

	grpcServer *grpc.Server
	httpServer *http.Server
	grpcLis    net.Listener
	httpLis    net.Listener

	idPrefix string
	idSeq    atomic.Uint64

	requestOpts envoyauth.Options // path limits and method overrides for NewRequest
}

// Run is New followed by Serve.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	s, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// New validates cfg, loads the JWKS, configures OPA and opens both listeners (so their addresses are
// known before Serve). Nothing is served until Serve.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *Sidecar, err error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	s := &Sidecar{cfg: cfg, logger: logger, metrics: newMetrics(), health: health.NewServer(),
		idPrefix: hex.EncodeToString(rnd[:]),
		requestOpts: envoyauth.Options{MaxPathBytes: cfg.MaxPathBytes, MaxPathSegments: cfg.MaxPathSegments,
			RemoveMethodOverride: cfg.MethodOverride == MethodOverrideRemove}}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)

	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	if !cfg.IdentityFromMetadata {
		if s.verifier, err = identity.New(ctx, cfg.Identity); err != nil {
			return nil, err
		}
		cleanup = append(cleanup, func() { _ = s.verifier.Close(context.Background()) })
	}
	if s.engine, err = newEngine(cfg, logger, s.metrics, s.becameReady); err != nil {
		return nil, err
	}
	if s.grpcLis, err = listen(cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("grpc_addr: %w", err)
	}
	cleanup = append(cleanup, func() { _ = s.grpcLis.Close() })
	if s.httpLis, err = listen(cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http_addr: %w", err)
	}
	cleanup = append(cleanup, func() { _ = s.httpLis.Close() })

	if s.tracer, err = tracing.New(ctx, cfg.Tracing); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	cleanup = append(cleanup, func() { _ = s.tracer.Shutdown(context.Background()) })
	s.pool = newPool(cfg.Workers, s.engine.hot)
	if s.engine.logs != nil {
		s.logs = newDecisionLog(logger, s.engine.manager.Store, cfg.DecisionLogs.QueueSize, s.engine.logs.Log, s.metrics.logsDropped.Inc)
	}
	// Streams are served on a fixed set of reused goroutines: their stacks have grown to what OPA's evaluator
	// needs, so a Check evaluates inline without growing a fresh goroutine's stack or a hand-off.
	// Check requests arrive as bytes (codec.go) and may be up to MaxReceiveBytes, so that every one of them
	// gets a CheckResponse; Check denies those over MaxRequestBytes.
	grpcOpts := []grpc.ServerOption{grpc.NumStreamWorkers(uint32(max(64, 16*cfg.Workers))),
		grpc.ForceServerCodecV2(newCheckCodec()), grpc.MaxRecvMsgSize(cfg.MaxReceiveBytes)}
	grpcTLS, err := cfg.GRPCTLS.Load(tls.RequireAndVerifyClientCert)
	if err != nil {
		return nil, fmt.Errorf("grpc_tls: %w", err)
	}
	if grpcTLS != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(grpcTLS)))
	}
	httpTLS, err := cfg.HTTPTLS.Load(tls.RequireAndVerifyClientCert)
	if err != nil {
		return nil, fmt.Errorf("http_tls: %w", err)
	}
	s.grpcServer = grpc.NewServer(grpcOpts...)
	s.grpcServer.RegisterService(&checkServiceDesc, s)
	healthpb.RegisterHealthServer(s.grpcServer, s.health)
	reflection.Register(s.grpcServer)
	s.httpServer = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 10 * time.Second, TLSConfig: httpTLS,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	return s, nil
}

func listen(addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", addr)
}

// GRPCAddr and HTTPAddr are the listeners' addresses (useful with port 0).
func (s *Sidecar) GRPCAddr() net.Addr { return s.grpcLis.Addr() }

// HTTPAddr is the HTTP listener's address.
func (s *Sidecar) HTTPAddr() net.Addr { return s.httpLis.Addr() }

// Ready reports whether a bundle is active and, with MaxBundleAge, not older than that (freshness.go).
func (s *Sidecar) Ready() bool { return s.ready.Load() && !s.engine.stale.Load() }

// Revision is the active bundle's revision ("" before the first activation).
func (s *Sidecar) Revision() string {
	if q := s.engine.current.Load(); q != nil {
		return q.revision
	}
	return ""
}

// TriggerBundle downloads the bundle now instead of waiting for the next poll.
func (s *Sidecar) TriggerBundle(ctx context.Context) error { return s.engine.trigger(ctx) }

func (s *Sidecar) becameReady() {
	s.ready.Store(true)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// Serve starts OPA (activating a persisted bundle at once when there is one), serves gRPC and HTTP until
// ctx ends, then shuts down in order: health NOT_SERVING, gRPC GracefulStop (Stop after
// ShutdownTimeout), HTTP Shutdown, OPA stop, workers and decision logs drained.
func (s *Sidecar) Serve(ctx context.Context) error {
	if err := s.engine.start(ctx); err != nil {
		_ = s.grpcLis.Close()
		_ = s.httpLis.Close()
		return err
	}
	go s.watchFreshness(ctx)
	errc := make(chan error, 2)
	go func() {
		if err := s.grpcServer.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	go func() {
		serve := s.httpServer.Serve
		if s.httpServer.TLSConfig != nil {
			serve = func(l net.Listener) error { return s.httpServer.ServeTLS(l, "", "") }
		}
		if err := serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http server: %w", err)
		}
	}()
	s.logger.Info("sidecar serving", "grpc", s.GRPCAddr().String(), "http", s.HTTPAddr().String(),
		"grpc_mtls", s.cfg.GRPCTLS.Enabled(), "http_tls", s.cfg.HTTPTLS.Enabled(),
		"data_api_raw", s.cfg.DataAPI.AllowRawData, "dry_run", s.cfg.DryRun)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.shutdown()
	return serveErr
}

func (s *Sidecar) shutdown() {
	s.logger.Info("sidecar stopping")
	s.health.Shutdown() // NOT_SERVING for every service
	stopped := make(chan struct{})
	go func() { s.grpcServer.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.grpcServer.Stop()
		<-stopped
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.httpServer.Shutdown(ctx); err != nil {
		_ = s.httpServer.Close()
	}
	s.logs.close() // hands the queued entries to OPA's decision log plugin, which flushes them on stop
	s.engine.stop(ctx)
	if err := s.tracer.Shutdown(ctx); err != nil {
		s.logger.Warn("flushing the trace spans", "error", err)
	}
	if s.verifier != nil {
		_ = s.verifier.Close(ctx)
	}
	s.pool.close()
}

// decisionID returns a unique id: a random per-process prefix and a sequence number.
func (s *Sidecar) decisionID() string {
	var b [33]byte
	copy(b[:16], s.idPrefix)
	b[16] = '-'
	n := strconv.AppendUint(b[17:17], s.idSeq.Add(1), 16)
	return string(b[:17+len(n)])
}

// Check implements envoy.service.auth.v3.Authorization for a decoded request (in-process callers; the gRPC
// server calls checkBytes). It never returns an error: every failure is a denial with its reason, so Envoy's
// failure_mode_allow never decides.
func (s *Sidecar) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.check(ctx, time.Now(), req, ""), nil
}

// checkBytes answers a Check from its encoded request: over MaxRequestBytes it is denied as
// request_too_large without being decoded, and a request protobuf-go does not decode (checkUnmarshal) is
// denied as malformed_request.
func (s *Sidecar) checkBytes(ctx context.Context, raw []byte) *authv3.CheckResponse {
	start := time.Now()
	if len(raw) > s.cfg.MaxRequestBytes {
		return s.check(ctx, start, nil, envoyauth.ReasonRequestTooLarge)
	}
	req := &authv3.CheckRequest{}
	if err := checkUnmarshal.Unmarshal(raw, req); err != nil {
		return s.check(ctx, start, nil, envoyauth.ReasonMalformedRequest)
	}
	return s.check(ctx, start, req, "")
}

// check decides req, or denies with refused when it is set (a request that could not be read: req is nil),
// and renders, counts and logs the decision.
func (s *Sidecar) check(ctx context.Context, start time.Time, req *authv3.CheckRequest, refused string) *authv3.CheckResponse {
	id := s.decisionID()
	var span trace.Span // nil unless tracing is on: the disabled path costs this nil check only
	if s.tracer != nil {
		ctx, span = s.tracer.StartCheck(ctx, req.GetAttributes().GetRequest().GetHttp().GetHeaders())
	}
	var d envoyauth.Decision
	var input *envoyauth.Request
	var failed bool
	if refused != "" {
		d = envoyauth.Deny(http.StatusForbidden, refused)
	} else {
		d, input, failed = s.decide(ctx, req)
	}
	result := "deny"
	if d.Allowed {
		result = "allow"
	} else if s.cfg.DryRun {
		result = "dry_run"
	}
	var remove []string
	if input != nil {
		remove = input.Spoofed
		if len(input.MethodOverrides) > 0 {
			remove = append(slices.Clip(remove), input.MethodOverrides...)
		}
	}
	var resp *authv3.CheckResponse
	if result == "dry_run" {
		allowed := d
		allowed.Allowed = true
		resp = envoyauth.CheckResponse(allowed, id, remove)
	} else {
		resp = envoyauth.CheckResponse(d, id, remove)
	}
	elapsed := time.Since(start)
	switch {
	case failed:
		s.metrics.checkError.Observe(elapsed.Seconds())
	case d.Allowed:
		s.metrics.checkAllow.Observe(elapsed.Seconds())
	default:
		s.metrics.checkDeny.Observe(elapsed.Seconds())
	}
	s.metrics.decision(result, d.Reason)
	if s.logs != nil {
		e := decisionEntry{ID: id, Time: start, Path: s.engine.responsePath, Revision: s.Revision(), Outcome: result,
			Reason: d.Reason, Decision: d, Duration: elapsed}
		if p, ok := peer.FromContext(ctx); ok {
			e.Peer = p.Addr
		}
		e.Request = input // the Check is done with it: the log builds its input document
		s.logs.log(e)
	}
	if span != nil {
		tracing.EndCheck(span, result, d.Reason, d.Route, s.Revision(), failed)
	}
	return resp
}

// decide returns the decision, the translated request (nil when it could not be built) and whether the
// denial is an internal failure (no bundle, evaluation error, deadline).
func (s *Sidecar) decide(ctx context.Context, req *authv3.CheckRequest) (envoyauth.Decision, *envoyauth.Request, bool) {
	r, err := s.requestOpts.NewRequest(req)
	if err != nil {
		return envoyauth.Deny(http.StatusForbidden, envoyauth.ReasonOf(err)), r, false
	}
	if s.cfg.IdentityFromMetadata {
		if id, ok := envoyauth.MetadataIdentity(req, s.cfg.MetadataNamespace, s.cfg.MetadataKey); ok {
			r.WithIdentity(id)
		}
	} else {
		tok, ok := identity.BearerToken(r.Authorization)
		switch {
		case ok:
			claims, err := s.verifier.Verify(ctx, tok)
			if err != nil {
				s.metrics.jwtFailures.WithLabelValues(string(identity.ReasonOf(err))).Inc()
				return envoyauth.Deny(http.StatusUnauthorized, envoyauth.ReasonInvalidToken), r, false
			}
			r.WithIdentity(envoyauth.Identity{User: claims.Subject, Token: claims.ID})
		case r.Authorization != "":
			s.metrics.jwtFailures.WithLabelValues(string(identity.ReasonMalformed)).Inc()
			return envoyauth.Deny(http.StatusUnauthorized, envoyauth.ReasonInvalidToken), r, false
		default:
			s.metrics.jwtFailures.WithLabelValues(string(identity.ReasonMissing)).Inc()
			// The policy answers unauthenticated requests (401 unless a route says otherwise).
		}
	}
	q := s.engine.current.Load()
	if q == nil {
		return envoyauth.Deny(http.StatusForbidden, envoyauth.ReasonNoBundle), r, true
	}
	if d, ok, failed := s.fastDecide(ctx, q, r); ok {
		return d, r, failed
	}
	d, failed := s.decision(ctx, q, &q.response, r.Input())
	return d, r, failed
}

// decision evaluates an Envoy answer (response, or routed for the fast path) and reads it. Any failure is a
// denial with its reason code and failed set.
func (s *Sidecar) decision(ctx context.Context, q *queries, pq *rego.PreparedEvalQuery, input ast.Value) (envoyauth.Decision, bool) {
	v, err := s.evalCheck(ctx, pq, input)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (err != nil && ctx.Err() != nil):
		return envoyauth.Deny(http.StatusForbidden, envoyauth.ReasonDeadlineExceeded), true
	case err != nil:
		s.logger.Error("evaluating the Envoy decision", "error", err)
		return envoyauth.Deny(http.StatusForbidden, envoyauth.ReasonEvaluationError), true
	case v == nil:
		s.logger.Error("the Envoy decision is undefined", "revision", q.revision)
		return envoyauth.Deny(http.StatusForbidden, envoyauth.ReasonEvaluationError), true
	}
	result, err := ast.JSON(v)
	if err != nil {
		s.logger.Error("reading the Envoy decision", "error", err)
		return envoyauth.Deny(http.StatusForbidden, envoyauth.ReasonEvaluationError), true
	}
	d, err := envoyauth.DecisionFromResult(result)
	if err != nil {
		s.logger.Error("reading the Envoy decision", "error", err)
		return envoyauth.Deny(http.StatusForbidden, envoyauth.ReasonEvaluationError), true
	}
	return d, false
}

// evalCheck evaluates a Check's query within CheckTimeout through the engine's hot path (engine.Hot: no
// goroutine per evaluation, no per-call metrics, the catalogue read as shared AST): inline, on the gRPC
// stream worker, by default, or on the worker pool when EvalOnPool is set. A request whose client went away
// is still answered. An undefined result is (nil, nil).
func (s *Sidecar) evalCheck(ctx context.Context, q *rego.PreparedEvalQuery, input ast.Value) (ast.Value, error) {
	if s.cfg.EvalOnPool {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
		defer cancel()
		return s.pool.eval(ctx, q, input)
	}
	return s.engine.hot.Eval(ctx, q, input, s.cfg.CheckTimeout)
}

// fastDecide answers a request through the fast path (fast.go): one evaluation of data.keygate.envoy.routed
// on the route matched in Go. ok is false when the fast path does not apply (no fast path, no subject, no
// route or org): the full response then decides, also in one evaluation. An evaluation failure is a denial
// here (failed), never a second evaluation.
func (s *Sidecar) fastDecide(ctx context.Context, q *queries, r *envoyauth.Request) (d envoyauth.Decision, ok, failed bool) {
	id, hasID := r.Identity()
	if q.fast == nil || !hasID || id.User == "" || s.cfg.DisableFastPath {
		return envoyauth.Decision{}, false, false
	}
	route, org, resID, matched := q.fast.match(r)
	if !matched {
		return envoyauth.Decision{}, false, false
	}
	d, failed = s.decision(ctx, q, q.fast.routed, q.fast.input(id, route, org, resID))
	return d, true, failed
}

// evalPath evaluates a data path with an input for the data API.
func (s *Sidecar) evalPath(ctx context.Context, path string, input ast.Value) (any, bool, string, error) {
	q := s.engine.current.Load()
	if q == nil {
		return nil, false, "", errNoBundle
	}
	pq, err := q.query(ctx, path)
	if err != nil {
		return nil, false, q.revision, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DataTimeout)
	defer cancel()
	v, err := s.pool.eval(ctx, pq, input)
	if err != nil {
		return nil, false, q.revision, err
	}
	if v == nil {
		return nil, false, q.revision, nil
	}
	out, err := ast.JSON(v)
	if err != nil {
		return nil, false, q.revision, err
	}
	return out, true, q.revision, nil
}
