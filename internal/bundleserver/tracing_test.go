package bundleserver

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keygate/keygate/internal/tracing"
)

// TestBuildTracing: each Build records a keygate.build span with the revision and duration; a failed build's
// span has an error status.
func TestBuildTracing(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.NewWithExporter(tracing.Config{Enabled: true, ServiceName: tracing.ServiceServe}, exp)
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	src := newSource(t)
	s := newServer(t, src, func(c *Config) { c.Tracer = tr })
	if err := s.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	src.set(nil, errors.New("database down"))
	if err := s.Build(context.Background()); err == nil {
		t.Fatal("the failing source built")
	}
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("want 2 spans, got %d", len(spans))
	}
	ok, failed := spans[0], spans[1]
	attrs := map[string]string{}
	for _, kv := range ok.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if ok.Name != tracing.SpanBuild || attrs[tracing.AttrRevision] != s.Revision() || s.Revision() == "" ||
		attrs["keygate.build.duration_seconds"] == "" || ok.Status.Code == codes.Error {
		t.Errorf("build span %s status %v attributes %v (revision %q)", ok.Name, ok.Status, attrs, s.Revision())
	}
	if failed.Status.Code != codes.Error || len(failed.Events) == 0 {
		t.Errorf("failed build span status %v events %v, want an error with the recorded error", failed.Status, failed.Events)
	}
}
