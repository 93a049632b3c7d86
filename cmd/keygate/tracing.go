package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/keygate/keygate/internal/tracing"
)

// addTracingFlags registers --tracing-endpoint, --tracing-insecure and --tracing-sample-ratio (the caller
// applies the ratio when the flag is set: Config.SampleRatio is a pointer).
func addTracingFlags(f *pflag.FlagSet, c *tracing.Config, ratio *float64) {
	f.StringVar(&c.Endpoint, "tracing-endpoint", "", "export OpenTelemetry spans over OTLP to this collector (host:port for gRPC, http(s)://host:port[/path] for HTTP); tracing is off without it")
	f.BoolVar(&c.Insecure, "tracing-insecure", false, "OTLP/gRPC without TLS")
	f.Float64Var(ratio, "tracing-sample-ratio", 1, "fraction of root traces sampled, 0 to 1 (a sampled incoming traceparent is always followed)")
}

// startServeTracing returns the bundle server's Tracer from its tracing flags (nil when --tracing-endpoint
// is unset) and the function that flushes it on exit.
func startServeTracing(ctx context.Context, f *pflag.FlagSet, c tracing.Config, ratio float64, logger *slog.Logger) (*tracing.Tracer, func(), error) {
	c.Enabled = c.Endpoint != ""
	if f.Changed("tracing-sample-ratio") {
		c.SampleRatio = &ratio
	}
	c.SetDefaults(tracing.ServiceServe)
	if err := c.Validate(); err != nil {
		return nil, nil, usageErr("%v", err)
	}
	t, err := tracing.New(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	return t, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := t.Shutdown(sctx); err != nil {
			logger.Warn("flushing the trace spans", "error", err)
		}
	}, nil
}
