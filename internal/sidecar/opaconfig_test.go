package sidecar

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     map[string]any
		err      string
	}{
		{name: "nested key", in: "services.acme.url=https://x.example/v1",
			want: map[string]any{"services": map[string]any{"acme": map[string]any{"url": "https://x.example/v1"}}}},
		{name: "typed scalars", in: "a=true,b=false,c=null,d=42,e=007,f=0,g=1.5",
			want: map[string]any{"a": true, "b": false, "c": nil, "d": int64(42), "e": "007", "f": int64(0), "g": "1.5"}},
		{name: "list index", in: "a.b[1]=x",
			want: map[string]any{"a": map[string]any{"b": []any{nil, "x"}}}},
		{name: "list of maps", in: "a[0].b=x",
			want: map[string]any{"a": []any{map[string]any{"b": "x"}}}},
		{name: "list value", in: "labels.l={x,y},z=1",
			want: map[string]any{"labels": map[string]any{"l": []any{"x", "y"}}, "z": int64(1)}},
		{name: "escapes", in: `a\.b=c\,d`, want: map[string]any{"a.b": "c,d"}},
		{name: "empty value", in: "a=", want: map[string]any{"a": ""}},
		{name: "no value", in: "a", err: "has no value"},
		{name: "empty key", in: "=x", err: "empty key"},
		{name: "empty segment", in: "a..b=x", err: "empty key segment"},
		{name: "bad index", in: "a[x]=1", err: "bad list index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := map[string]any{}
			err := parseSet(tc.in, got)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseSet(%q) error %v, want %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parseSet(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
		})
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigOPAFormat(t *testing.T) {
	t.Setenv("KEYGATE_TEST_TOKEN", "s3cret")
	file := writeConfig(t, `
services:
  bundles:
    url: https://bundles.example
    credentials:
      bearer:
        token: ${KEYGATE_TEST_TOKEN}
    tls:
      ca_cert: /etc/ca.pem
bundles:
  keygate:
    service: bundles
    resource: /bundles/keygate.tar.gz
    signing:
      keyid: keygate
decision_logs:
  console: true
labels:
  app: identity
keygate:
  grpc_addr: 127.0.0.1:9999
  check_timeout: 50ms
  max_bundle_age: 0s
  identity:
    jwks_file: /etc/jwks.json
`)
	cfg, err := LoadConfig(file, []string{"keygate.http_addr=127.0.0.1:8888,labels.zone=eu", "decision_logs.console=false",
		"services.logs.url=https://logs.example", "decision_logs.service=logs"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPCAddr != "127.0.0.1:9999" || cfg.HTTPAddr != "127.0.0.1:8888" || cfg.CheckTimeout != 50*time.Millisecond ||
		cfg.Identity.JWKSFile != "/etc/jwks.json" || cfg.MaxBundleAge == nil || *cfg.MaxBundleAge != 0 {
		t.Fatalf("keygate section: %+v", cfg)
	}
	var opa map[string]any
	if err := json.Unmarshal(cfg.OPA, &opa); err != nil {
		t.Fatal(err)
	}
	if _, ok := opa["keygate"]; ok {
		t.Error("the keygate section was passed to OPA")
	}
	if got := sub(opa, "services", "bundles", "credentials", "bearer")["token"]; got != "s3cret" {
		t.Errorf("${KEYGATE_TEST_TOKEN} = %v", got)
	}
	if got := sub(opa, "labels"); got["app"] != "identity" || got["zone"] != "eu" {
		t.Errorf("labels = %v", got)
	}
	if got := sub(opa, "decision_logs"); got["console"] != false || got["service"] != "logs" {
		t.Errorf("decision_logs = %v (--set wins over the file)", got)
	}

	// Rendered for OPA: keygate's defaults where the configuration is silent; OPA parses it.
	cfg.SetDefaults()
	raw, err := renderOPAConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	src := sub(out, "bundles", "keygate")
	if src["size_limit_bytes"] != float64(DefaultBundleSizeLimitBytes) {
		t.Errorf("size_limit_bytes = %v, want the keygate default", src["size_limit_bytes"])
	}
	if p := sub(src, "polling"); p["min_delay_seconds"] != 10.0 || p["max_delay_seconds"] != 20.0 {
		t.Errorf("polling = %v", p)
	}
	if sub(out, "services", "bundles", "tls")["ca_cert"] != "/etc/ca.pem" {
		t.Error("services.bundles.tls lost")
	}
}

func TestLoadConfigRefuses(t *testing.T) {
	for _, tc := range []struct{ name, text, err string }{
		{"unknown OPA key", "discovery:\n  name: x\n", "discovery: not supported"},
		{"other bundle", "bundles:\n  other:\n    resource: x\n", `bundles.other: keygate authz follows one bundle, named "keygate"`},
		{"unknown keygate key", "keygate:\n  grpc_adr: x\n", "grpc_adr"},
		{"status prometheus", "status:\n  prometheus: true\n", "status.prometheus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tc.text), nil)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// TestFlagsOverrideOPABundle: bundle.url (--bundle-url) points bundles.keygate at its own service, keeping
// what the OPA configuration says about TLS, size limit and polling.
func TestFlagsOverrideOPABundle(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(writeConfig(t, `
services:
  keygate:
    url: https://old.example
    tls:
      ca_cert: /etc/ca.pem
bundles:
  keygate:
    service: keygate
    resource: /old.tar.gz
    size_limit_bytes: 1000
    polling:
      min_delay_seconds: 5
      max_delay_seconds: 6
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Bundle.URL = "http://new.example:8282/bundles/keygate.tar.gz"
	cfg.SetDefaults()
	raw, err := renderOPAConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	svc, src := sub(out, "services", "keygate"), sub(out, "bundles", "keygate")
	if svc["url"] != "http://new.example:8282" || sub(svc, "tls")["ca_cert"] != "/etc/ca.pem" {
		t.Errorf("service = %v", svc)
	}
	if src["resource"] != "/bundles/keygate.tar.gz" || src["size_limit_bytes"] != 1000.0 ||
		sub(src, "polling")["min_delay_seconds"] != 5.0 {
		t.Errorf("bundle = %v", src)
	}
}

// TestDefaultsDocumented: every row of the defaults table is in the README's configuration table.
func TestDefaultsDocumented(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range Defaults {
		row := "| `" + d.Key + "` | `" + d.Value + "` |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row %s", row)
		}
	}
}
