// Package tracing exports OpenTelemetry spans of keygate's Checks and bundle builds over OTLP. It is off by
// default: a disabled Config yields a nil *Tracer, and callers guard every use with a nil check, so the hot
// Check path neither allocates nor calls into OpenTelemetry.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Span names and attribute keys.
const (
	SpanCheck = "keygate.check"
	SpanBuild = "keygate.build"

	AttrResult   = "keygate.result"   // allow, deny or dry_run
	AttrReason   = "keygate.reason"   // reason code (internal/envoyauth/reason.go)
	AttrRoute    = "keygate.route"    // matched route pattern
	AttrRevision = "keygate.revision" // bundle revision
)

// Default service names.
const (
	ServiceAuthz = "keygate-authz"
	ServiceServe = "keygate-serve"
)

// Config configures tracing. The zero value is disabled.
type Config struct {
	// Enabled turns tracing on. Default false.
	Enabled bool `yaml:"enabled"`
	// Endpoint is the OTLP collector: host:port for OTLP/gRPC, or an http:// or https:// URL for OTLP/HTTP
	// (the path defaults to /v1/traces). Required when Enabled.
	Endpoint string `yaml:"endpoint"`
	// Insecure sends without TLS (gRPC host:port endpoints; a URL's scheme decides for OTLP/HTTP).
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the fraction of root traces sampled, in [0, 1]; a sampled incoming traceparent is always
	// followed. Default 1.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute. Default keygate-authz or keygate-serve.
	ServiceName string `yaml:"service_name"`
}

// SetDefaults fills unset fields; service is the default service name.
func (c *Config) SetDefaults(service string) {
	if c.SampleRatio == nil {
		r := 1.0
		c.SampleRatio = &r
	}
	if c.ServiceName == "" {
		c.ServiceName = service
	}
}

// Validate checks the configuration (after SetDefaults).
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	if c.Endpoint == "" {
		return errors.New("tracing.endpoint: required when tracing is enabled")
	}
	if r := c.SampleRatio; r != nil && (*r < 0 || *r > 1 || *r != *r) {
		return fmt.Errorf("tracing.sample_ratio: %v is not in [0, 1]", *r)
	}
	return nil
}

// Tracer starts keygate's spans. A nil *Tracer is tracing disabled; its methods are not to be called.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
}

// New returns the Tracer of cfg exporting over OTLP, or nil when tracing is disabled. The exporter connects
// lazily: an unreachable collector does not fail the start.
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	var err error
	if strings.HasPrefix(cfg.Endpoint, "http://") || strings.HasPrefix(cfg.Endpoint, "https://") {
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.Endpoint))
	} else {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint)}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP exporter: %w", err)
	}
	return newTracer(cfg, sdktrace.WithBatcher(exp)), nil
}

// NewWithExporter returns an enabled Tracer that hands each ended span to exp synchronously (tests, with
// tracetest.NewInMemoryExporter).
func NewWithExporter(cfg Config, exp sdktrace.SpanExporter) *Tracer {
	return newTracer(cfg, sdktrace.WithSyncer(exp))
}

func newTracer(cfg Config, export sdktrace.TracerProviderOption) *Tracer {
	cfg.SetDefaults(cfg.ServiceName)
	res := resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName))
	tp := sdktrace.NewTracerProvider(export, sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*cfg.SampleRatio))))
	return &Tracer{provider: tp, tracer: tp.Tracer("github.com/keygate/keygate")}
}

// Shutdown flushes the queued spans and stops the exporter.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutting down tracing: %w", err)
	}
	return nil
}

// StartCheck starts a keygate.check span, the child of the W3C traceparent in headers (an Envoy
// CheckRequest's lower-cased request headers) when there is a valid one.
func (t *Tracer) StartCheck(ctx context.Context, headers map[string]string) (context.Context, trace.Span) {
	if headers != nil {
		ctx = t.prop.Extract(ctx, propagation.MapCarrier(headers))
	}
	return t.tracer.Start(ctx, SpanCheck, trace.WithSpanKind(trace.SpanKindServer))
}

// EndCheck records a Check's closed-set outcome on span and ends it. failed marks an internal failure (no
// bundle, evaluation error) as an error status.
func EndCheck(span trace.Span, result, reason, route, revision string, failed bool) {
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, attribute.String(AttrResult, result), attribute.String(AttrReason, reason))
	if route != "" {
		attrs = append(attrs, attribute.String(AttrRoute, route))
	}
	if revision != "" {
		attrs = append(attrs, attribute.String(AttrRevision, revision))
	}
	span.SetAttributes(attrs...)
	if failed {
		span.SetStatus(codes.Error, reason)
	}
	span.End()
}

// StartBuild starts a keygate.build span.
func (t *Tracer) StartBuild(ctx context.Context) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, SpanBuild)
}

// EndBuild records a build's revision, duration and error on span and ends it.
func EndBuild(span trace.Span, revision string, took time.Duration, err error) {
	if revision != "" {
		span.SetAttributes(attribute.String(AttrRevision, revision))
	}
	span.SetAttributes(attribute.Float64("keygate.build.duration_seconds", took.Seconds()))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
