package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/internal/sidecar"
	"github.com/keygate/keygate/internal/tracing"
)

// TestAuthzTracing: tracing is off by default; the tracing: keys of the config file are read, and
// --tracing-endpoint turns it on, with --tracing-sample-ratio overriding the file.
func TestAuthzTracing(t *testing.T) {
	t.Parallel()
	cfgFile := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(cfgFile, []byte(`
bundle: {file: b.tar.gz}
identity: {jwks_file: j.json}
tracing: {insecure: true, sample_ratio: 0.5, service_name: edge-authz}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) sidecar.Config {
		t.Helper()
		cfg, err := loadSidecarConfig(cfgFile)
		if err != nil {
			t.Fatal(err)
		}
		cmd := newAuthzCmd(&env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		var fl sidecar.Config
		fl.Tracing.Endpoint, _ = cmd.Flags().GetString("tracing-endpoint")
		applyAuthzFlags(cmd.Flags(), &cfg, &fl, nil)
		cfg.SetDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	off := parse()
	if off.Tracing.Enabled || *off.Tracing.SampleRatio != 0.5 || !off.Tracing.Insecure || off.Tracing.ServiceName != "edge-authz" {
		t.Errorf("without flags: %+v", off.Tracing)
	}
	on := parse("--tracing-endpoint", "otel:4317", "--tracing-sample-ratio", "0.25")
	if !on.Tracing.Enabled || on.Tracing.Endpoint != "otel:4317" || *on.Tracing.SampleRatio != 0.25 {
		t.Errorf("with flags: %+v", on.Tracing)
	}
}

// TestServeTracingFlags: serve builds no tracer without --tracing-endpoint and rejects a bad ratio.
func TestServeTracingFlags(t *testing.T) {
	t.Parallel()
	cmd := newServeCmd(&env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	if err := cmd.ParseFlags([]string{"--tracing-sample-ratio", "2"}); err != nil {
		t.Fatal(err)
	}
	tr, flush, err := startServeTracing(t.Context(), cmd.Flags(), tracing.Config{}, 0.5, nil)
	if err != nil || tr != nil {
		t.Fatalf("no endpoint: tracer %v, error %v; want none", tr, err)
	}
	flush()
	if _, _, err := startServeTracing(t.Context(), cmd.Flags(), tracing.Config{Endpoint: "otel:4317"}, 2, nil); err == nil {
		t.Error("sample ratio 2 accepted")
	}
}
