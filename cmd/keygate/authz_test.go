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

	"github.com/keygate/keygate/internal/sidecar"
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
		{"grpc tls without a client ca", []string{"authz", "--bundle-url", "http://h/b", "--jwks-file", "j", "--grpc-tls-cert", "c", "--grpc-tls-key", "k"}, "grpc_tls.client_ca_file"},
		{"bundle ca on http", []string{"authz", "--bundle-url", "http://h/b", "--jwks-file", "j", "--bundle-ca-cert", "ca.pem"}, "bundle.ca_cert"},
		{"client cert without key", []string{"authz", "--bundle-url", "https://h/b", "--jwks-file", "j", "--bundle-client-cert", "c.pem"}, "bundle.client_key"},
		{"token and token file", []string{"authz", "--bundle-url", "https://h/b", "--jwks-file", "j", "--bundle-token", "t", "--bundle-token-file", "f"}, "bundle.token_file"},
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

// TestAuthzSecurityKeys: the TLS, credential and data API keys of the YAML file and their flags.
func TestAuthzSecurityKeys(t *testing.T) {
	t.Parallel()
	cfgFile := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(cfgFile, []byte(`
grpc_tls: {cert_file: g.pem, key_file: g-key.pem, client_ca_file: envoy-ca.pem}
http_tls: {cert_file: h.pem, key_file: h-key.pem}
data_api: {allow_raw_data: true}
bundle:
  url: https://bundles:8282/bundles/keygate.tar.gz
  ca_cert: ca.pem
  client_cert: c.pem
  client_key: c-key.pem
  token_file: token
identity_from_metadata: true
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadSidecarConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	cmd := newAuthzCmd(e)
	if err := cmd.ParseFlags([]string{"--http-tls-client-ca", "probes-ca.pem", "--bundle-ca-cert", "other-ca.pem", "--data-api-raw=false"}); err != nil {
		t.Fatal(err)
	}
	var fl sidecar.Config
	fl.HTTPTLS.ClientCAFile, _ = cmd.Flags().GetString("http-tls-client-ca")
	fl.Bundle.CACert, _ = cmd.Flags().GetString("bundle-ca-cert")
	fl.DataAPI.AllowRawData, _ = cmd.Flags().GetBool("data-api-raw")
	applyAuthzFlags(cmd.Flags(), &cfg, &fl, nil)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	want := sidecar.Config{}
	want.GRPCTLS.CertFile, want.GRPCTLS.KeyFile, want.GRPCTLS.ClientCAFile = "g.pem", "g-key.pem", "envoy-ca.pem"
	want.HTTPTLS.CertFile, want.HTTPTLS.KeyFile, want.HTTPTLS.ClientCAFile = "h.pem", "h-key.pem", "probes-ca.pem"
	if cfg.GRPCTLS != want.GRPCTLS || cfg.HTTPTLS != want.HTTPTLS || cfg.DataAPI.AllowRawData ||
		cfg.Bundle.CACert != "other-ca.pem" || cfg.Bundle.ClientCert != "c.pem" || cfg.Bundle.ClientKey != "c-key.pem" ||
		cfg.Bundle.TokenFile != "token" {
		t.Fatalf("config %+v", cfg)
	}
}
