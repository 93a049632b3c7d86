package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestAuthzConfigFileAndFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "authz.yaml")
	if err := os.WriteFile(cfgFile, []byte(`
grpc_addr: unix:///tmp/keygate.sock
bundle:
  url: http://127.0.0.1:8282/bundles/keygate.tar.gz
  min_delay: 5s
  max_delay: 30s
identity:
  jwks_file: /etc/keygate/jwks.json
  clock_skew: 10s
dry_run: true
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadSidecarConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	cmd := newAuthzCmd(e)
	cmd.RunE = func(*cobra.Command, []string) error { return nil }
	if err := cmd.ParseFlags([]string{"--grpc-addr", "127.0.0.1:9999", "--audience", "api", "--audience", "web"}); err != nil {
		t.Fatal(err)
	}
	fl := cmd.Flags()
	aud, _ := fl.GetStringSlice("audience")
	var flags = cfg // the flag-bound values live in the command; re-read them by name
	flags.GRPCAddr, _ = fl.GetString("grpc-addr")
	applyAuthzFlags(fl, &cfg, &flags, aud)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.GRPCAddr != "127.0.0.1:9999" || cfg.HTTPAddr != "127.0.0.1:8181" || !cfg.DryRun ||
		cfg.Bundle.MinDelay != 5*time.Second || cfg.Identity.ClockSkew != 10*time.Second ||
		strings.Join(cfg.Identity.Audiences, ",") != "api,web" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestAuthzRejectsBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("bundle:\n  urll: x\n"), 0o644)
	opa := filepath.Join(dir, "opa.yaml")
	_ = os.WriteFile(opa, []byte("discovery:\n  resource: x\nkeygate:\n  grpc_addr: 127.0.0.1:0\n"), 0o644)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown key in the file", []string{"authz", "--config", bad}, "urll"},
		{"no bundle", []string{"authz", "--jwks-file", "j.json"}, "bundle.url"},
		{"no identity", []string{"authz", "--bundle-file", "b.tar.gz"}, "identity.jwks_file"},
		{"bad poll delay", []string{"authz", "--bundle-url", "http://h/b", "--jwks-file", "j", "--poll-min", "1500ms"}, "bundle.min_delay"},
		{"unsupported OPA key", []string{"authz", "--config-file", opa}, "discovery: not supported"},
		{"bad --set", []string{"authz", "--set", "keygate.grpc_addr"}, "has no value"},
		{"--set checked like the file", []string{"authz", "--set", "keygate.max_bundle_age=-1s,keygate.bundle.file=b", "--jwks-file", "j"}, "max_bundle_age"},
		{"both formats", []string{"authz", "--config", bad, "--set", "a=b"}, "exclusive"},
		{"negative --max-bundle-age", []string{"authz", "--bundle-file", "b", "--jwks-file", "j", "--max-bundle-age", "-1m"}, "max_bundle_age"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 naming %q", code, errb.String(), tc.want)
			}
		})
	}
}
