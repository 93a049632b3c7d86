package sidecar

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keygate/keygate/internal/tracing"
)

func spanAttrs(s tracetest.SpanStub) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value.Emit()
	}
	return m
}

// TestCheckTracing: with tracing on, a Check carrying a W3C traceparent yields a keygate.check span in that
// trace, child of the incoming span, with the closed-set outcome and the revision as attributes.
func TestCheckTracing(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, Config{})
	if f.s.tracer != nil {
		t.Fatal("tracing is off by default, yet the sidecar has a tracer")
	}
	exp := tracetest.NewInMemoryExporter()
	f.s.tracer = tracing.NewWithExporter(tracing.Config{Enabled: true, ServiceName: "test"}, exp)
	t.Cleanup(func() { _ = f.s.tracer.Shutdown(context.Background()) })

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	alice := "Bearer " + f.dev.token(t, "u-alice", "tok-alice", time.Hour)
	resp, _ := f.s.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity",
		map[string]string{"authorization": alice, "traceparent": "00-" + traceID + "-" + parentID + "-01"}))
	if resp.GetOkResponse() == nil {
		t.Fatalf("want an allowed Check, got %v", resp)
	}
	_, _ = f.s.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", nil))

	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("want 2 spans, got %d", len(spans))
	}
	allowed, denied := spans[0], spans[1]
	if allowed.Name != tracing.SpanCheck {
		t.Errorf("span name %q, want %q", allowed.Name, tracing.SpanCheck)
	}
	if got := allowed.SpanContext.TraceID().String(); got != traceID {
		t.Errorf("trace id %s, want the traceparent's %s", got, traceID)
	}
	if got := allowed.Parent.SpanID().String(); got != parentID || !allowed.Parent.IsRemote() {
		t.Errorf("parent span %s (remote %v), want the remote %s", got, allowed.Parent.IsRemote(), parentID)
	}
	a := spanAttrs(allowed)
	if a[tracing.AttrResult] != "allow" || a[tracing.AttrRevision] != f.s.Revision() || a[tracing.AttrRoute] == "" {
		t.Errorf("allowed span attributes %v", a)
	}
	d := spanAttrs(denied)
	if d[tracing.AttrResult] != "deny" || d[tracing.AttrReason] != "unauthenticated" {
		t.Errorf("denied span attributes %v", d)
	}
	if denied.Parent.IsValid() {
		t.Errorf("a Check without traceparent has parent %v, want a root span", denied.Parent)
	}
	if denied.SpanContext.TraceID().String() == traceID {
		t.Error("a Check without traceparent joined the other Check's trace")
	}
	for _, s := range spans {
		for _, kv := range s.Attributes {
			switch kv.Key {
			case tracing.AttrResult, tracing.AttrReason, tracing.AttrRoute, tracing.AttrRevision:
			default:
				t.Errorf("unexpected attribute %s=%s (only the closed-set values and the revision)", kv.Key, kv.Value.Emit())
			}
		}
		if s.Status.Code == codes.Error {
			t.Errorf("span %v has an error status for a policy decision", s.Attributes)
		}
	}
}

// TestCheckTracingNoBundle: a Check that fails internally (no bundle) has an error status.
func TestCheckTracingNoBundle(t *testing.T) {
	t.Parallel()
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{URL: "http://127.0.0.1:1/b.tar.gz"}, Identity: identityFile(dev)})
	exp := tracetest.NewInMemoryExporter()
	s.tracer = tracing.NewWithExporter(tracing.Config{Enabled: true}, exp)
	_, _ = s.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", nil))
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("want 1 span, got %d", len(spans))
	}
	if spans[0].Status.Code != codes.Error || spanAttrs(spans[0])[tracing.AttrReason] != "no_bundle" {
		t.Errorf("span status %v attributes %v, want an error with reason no_bundle", spans[0].Status, spans[0].Attributes)
	}
}

// TestTracingConfig: tracing is validated with the sidecar's configuration.
func TestTracingConfig(t *testing.T) {
	t.Parallel()
	cfg := Config{Bundle: BundleConfig{File: "b.tar.gz"}, Identity: identityConfig{JWKSFile: "j.json"}}
	cfg.Tracing.Enabled = true
	cfg.SetDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "tracing.endpoint") {
		t.Errorf("tracing enabled without an endpoint: %v, want a tracing.endpoint error", err)
	}
	cfg.Tracing.Endpoint = "127.0.0.1:4317"
	if err := cfg.Validate(); err != nil {
		t.Errorf("tracing with an endpoint: %v", err)
	}
	if cfg.Tracing.ServiceName != tracing.ServiceAuthz || *cfg.Tracing.SampleRatio != 1 {
		t.Errorf("tracing defaults %+v", cfg.Tracing)
	}
}
