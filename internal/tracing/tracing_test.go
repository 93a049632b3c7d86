package tracing

import (
	"context"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func ratio(r float64) *float64 { return &r }

func TestConfig(t *testing.T) {
	t.Parallel()
	var c Config
	c.SetDefaults(ServiceAuthz)
	if c.Enabled || *c.SampleRatio != 1 || c.ServiceName != ServiceAuthz {
		t.Errorf("defaults %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("disabled config: %v", err)
	}
	for _, bad := range []Config{
		{Enabled: true},
		{Enabled: true, Endpoint: "127.0.0.1:4317", SampleRatio: ratio(1.5)},
		{Enabled: true, Endpoint: "127.0.0.1:4317", SampleRatio: ratio(-0.1)},
		{Enabled: true, Endpoint: "127.0.0.1:4317", SampleRatio: ratio(math.NaN())},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// TestNewDisabled: tracing off creates no provider (a nil Tracer).
func TestNewDisabled(t *testing.T) {
	t.Parallel()
	tr, err := New(context.Background(), Config{Endpoint: "127.0.0.1:4317"})
	if err != nil || tr != nil {
		t.Fatalf("New(disabled) = %v, %v; want nil, nil", tr, err)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("nil Tracer Shutdown: %v", err)
	}
	if _, err := New(context.Background(), Config{Enabled: true}); err == nil {
		t.Error("enabled without an endpoint created a tracer")
	}
}

// TestNewOTLP: both exporters start without a reachable collector (they connect lazily) and shut down.
func TestNewOTLP(t *testing.T) {
	t.Parallel()
	for _, ep := range []string{"127.0.0.1:1", "http://127.0.0.1:1/v1/traces"} {
		tr, err := New(context.Background(), Config{Enabled: true, Endpoint: ep, Insecure: true, SampleRatio: ratio(1)})
		if err != nil || tr == nil {
			t.Fatalf("New(%s) = %v, %v", ep, tr, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := tr.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown(%s) with no spans: %v", ep, err)
		}
		cancel()
	}
}

// TestSampleRatio: ratio 0 samples no root span but follows a sampled incoming traceparent.
func TestSampleRatio(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tr := NewWithExporter(Config{Enabled: true, SampleRatio: ratio(0)}, exp)
	_, span := tr.StartCheck(context.Background(), map[string]string{})
	EndCheck(span, "deny", "no_grant", "", "", false)
	_, span = tr.StartCheck(context.Background(), map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	EndCheck(span, "allow", "", "r1", "rev", false)
	_, span = tr.StartCheck(context.Background(), map[string]string{"traceparent": "garbage"})
	EndCheck(span, "allow", "", "r1", "rev", false)
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("want only the span under the sampled traceparent, got %d spans", len(spans))
	}
}
