// Package sidecar is keygate's authorization sidecar: an embedded OPA that follows a bundle (URL or file,
// signature-verified, persisted), answers Envoy ext_authz v3 Check on gRPC and OPA's data API, /health and
// /metrics on HTTP.
package sidecar

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/keygate/keygate/internal/envoyauth"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/tlsconfig"
	"github.com/keygate/keygate/internal/tracing"
)

// Defaults: every default of the sidecar's configuration lives here (SetDefaults, the flags of keygate authz
// and the OPA configuration keygate renders read these; README.md lists them, TestDefaultsDocumented checks).
const (
	DefaultGRPCAddr          = "127.0.0.1:9191"
	DefaultHTTPAddr          = "127.0.0.1:8181"
	DefaultMetadataNamespace = "envoy.filters.http.jwt_authn"
	DefaultMetadataKey       = "verified_jwt"
	DefaultCheckTimeout      = 100 * time.Millisecond
	DefaultDataTimeout       = 5 * time.Second
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultDecisionLogQueue  = 1024
	DefaultVerificationKeyID = "keygate"
	DefaultPollMin           = 10 * time.Second
	DefaultPollMax           = 20 * time.Second
	// DefaultMaxBundleAge: readiness fails once the bundle server has not confirmed the active bundle for this
	// long (about 30 failed polls at the default polling delays).
	DefaultMaxBundleAge = 10 * time.Minute
	// DefaultBundleSizeLimitBytes is OPA's bundles.<name>.size_limit_bytes when the configuration leaves it
	// unset: the largest file of a bundle, decompressed (OPA checks the tar header before reading the file).
	// The 1M-user bundle's data.json is 84 MiB (docs/performance.md): 256 MiB is three times that, and a
	// fourth of OPA's own default (1 GiB), which let a 900 MB whitespace-padded data.json through (issue 11).
	DefaultBundleSizeLimitBytes = 256 << 20
	// DefaultMaxRequestBytes: a CheckRequest under Envoy's default header limit (max_request_headers_kb, 60 KiB)
	// is a fraction of it; a larger one is denied (request_too_large).
	DefaultMaxRequestBytes = 1 << 20
	// DefaultMaxReceiveBytes is gRPC's receive limit: twice Envoy's largest header limit (8192 KiB), so every
	// CheckRequest Envoy builds from headers and metadata is answered, never refused by gRPC.
	DefaultMaxReceiveBytes = 16 << 20
	DefaultMethodOverride  = MethodOverrideDeny
	DefaultDecisionPath    = "keygate/envoy/response"
)

// Default is one row of the defaults table.
type Default struct {
	Key   string // the configuration key (keygate.* for keygate's own section, else OPA's)
	Value string
}

// Defaults is the defaults table (README.md, "Configuration").
var Defaults = []Default{
	{"keygate.grpc_addr", DefaultGRPCAddr},
	{"keygate.http_addr", DefaultHTTPAddr},
	{"keygate.metadata_namespace", DefaultMetadataNamespace},
	{"keygate.metadata_key", DefaultMetadataKey},
	{"keygate.check_timeout", DefaultCheckTimeout.String()},
	{"keygate.data_timeout", DefaultDataTimeout.String()},
	{"keygate.workers", "GOMAXPROCS"},
	{"keygate.shutdown_timeout", DefaultShutdownTimeout.String()},
	{"keygate.max_bundle_age", DefaultMaxBundleAge.String()},
	{"keygate.decision_logs.queue_size", strconv.Itoa(DefaultDecisionLogQueue)},
	{"keygate.max_request_bytes", strconv.Itoa(DefaultMaxRequestBytes)},
	{"keygate.max_receive_bytes", strconv.Itoa(DefaultMaxReceiveBytes)},
	{"keygate.max_path_bytes", strconv.Itoa(envoyauth.DefaultMaxPathBytes)},
	{"keygate.max_path_segments", strconv.Itoa(envoyauth.DefaultMaxPathSegments)},
	{"keygate.method_override", DefaultMethodOverride},
	{"keygate.decision_path", DefaultDecisionPath},
	{"keygate.bundle.verification_key_id", DefaultVerificationKeyID},
	{"keygate.bundle.verification_alg", "by the key's type: ES256 (EC), RS256 (RSA), HS256 (a secret)"},
	{"keygate.bundle.min_delay", DefaultPollMin.String()},
	{"keygate.bundle.max_delay", DefaultPollMax.String()},
	{"keygate.bundle.long_poll_timeout", "0s"},
	{"bundles.keygate.size_limit_bytes", strconv.Itoa(DefaultBundleSizeLimitBytes)},
	{"bundles.keygate.polling.min_delay_seconds", strconv.Itoa(int(DefaultPollMin / time.Second))},
	{"bundles.keygate.polling.max_delay_seconds", strconv.Itoa(int(DefaultPollMax / time.Second))},
	{"decision_logs.console", "true"},
}

// Config configures the sidecar. Zero fields take the defaults of SetDefaults.
type Config struct {
	// GRPCAddr is the ext_authz listener: host:port or unix:///path. Default 127.0.0.1:9191.
	GRPCAddr string `yaml:"grpc_addr"`
	// HTTPAddr is the data API / health / metrics listener: host:port or unix:///path. Default 127.0.0.1:8181.
	HTTPAddr string `yaml:"http_addr"`

	// GRPCTLS serves the ext_authz listener over mutual TLS: the server certificate and the CA that signs
	// the clients' (Envoy's) certificates, both required when set. Plaintext by default.
	GRPCTLS tlsconfig.Server `yaml:"grpc_tls"`
	// HTTPTLS serves the data API / health / metrics listener over TLS; with client_ca_file every client
	// must present a certificate that CA signed. Plaintext by default.
	HTTPTLS tlsconfig.Server `yaml:"http_tls"`
	// DataAPI says what the data API answers.
	DataAPI DataAPIConfig `yaml:"data_api"`

	Bundle   BundleConfig    `yaml:"bundle"`
	Identity identity.Config `yaml:"identity"`

	// IdentityFromMetadata takes the subject from the payload Envoy's jwt_authn filter stores in the
	// request's metadata (payload_in_metadata) instead of verifying the bearer token here.
	IdentityFromMetadata bool `yaml:"identity_from_metadata"`
	// MetadataNamespace is the filter metadata namespace. Default "envoy.filters.http.jwt_authn".
	MetadataNamespace string `yaml:"metadata_namespace"`
	// MetadataKey is jwt_authn's payload_in_metadata name. Default "verified_jwt" (as in envoy/sidecar.yaml).
	MetadataKey string `yaml:"metadata_key"`

	// DisableFastPath makes every Check evaluate the full data.keygate.envoy.response (for comparison and
	// debugging); by default allowed requests are answered by data.keygate.authz.allow on a Go-matched route.
	DisableFastPath bool `yaml:"disable_fast_path"`
	// DecisionPath is the rule every Check evaluates, slash-separated under data as opa-envoy-plugin's path
	// (default keygate/envoy/response). Its result must have opa-envoy-plugin's response shape (allowed,
	// headers, body, http_status). Another path disables the fast path, which evaluates the default's
	// data.keygate.envoy.routed.
	DecisionPath string `yaml:"decision_path"`

	// DryRun allows every request but logs and counts (result="dry_run") those the policy denies.
	DryRun bool `yaml:"dry_run"`
	// CheckTimeout bounds one Check's evaluation; past it the request is denied (deadline_exceeded).
	// Default 100ms.
	CheckTimeout time.Duration `yaml:"check_timeout"`
	// DataTimeout bounds one data API evaluation. Default 5s.
	DataTimeout time.Duration `yaml:"data_timeout"`
	// EvalOnPool evaluates Checks on the worker pool instead of inline on gRPC's stream workers (both reuse
	// goroutines; inline saves a hand-off).
	EvalOnPool bool `yaml:"eval_on_pool"`
	// Workers is the number of long-lived evaluation goroutines (data API, and Checks with EvalOnPool); gRPC
	// serves streams on max(64, 16 x Workers) reused goroutines. Default GOMAXPROCS.
	Workers int `yaml:"workers"`
	// ShutdownTimeout bounds the graceful stop of the gRPC and HTTP servers. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	DecisionLogs DecisionLogConfig `yaml:"decision_logs"`
	// Tracing exports a keygate.check span per Check over OTLP (internal/tracing). Off by default.
	Tracing tracing.Config `yaml:"tracing"`

	// MaxBundleAge: once the bundle server has not confirmed the active bundle (a 200 or a 304) for this long,
	// readiness fails (/health?bundles 500, gRPC health NOT_SERVING); Checks keep being answered from the
	// bundle. nil takes DefaultMaxBundleAge; 0 turns it off (fail-static). Ignored for bundle files.
	MaxBundleAge *time.Duration `yaml:"max_bundle_age"`

	// OPA is OPA's own configuration for what OPA owns: services, bundles (one bundle, named keygate), keys,
	// decision_logs, status, labels, persistence_directory; JSON. LoadConfig fills it from the top level of a
	// --config-file. Bundle (bundle.url, --bundle-url, ...) is rendered onto it (renderOPAConfig).
	OPA json.RawMessage `yaml:"-"`

	// MaxRequestBytes bounds a CheckRequest's encoded size: a larger one is denied (request_too_large) before
	// it is decoded. Default 1 MiB: a request under Envoy's default header limit (max_request_headers_kb
	// 60 KiB) is a fraction of it.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// MaxReceiveBytes is gRPC's receive limit (grpc.MaxRecvMsgSize): a message over it is refused by gRPC
	// (RESOURCE_EXHAUSTED, which Envoy's failure_mode_allow: false turns into a denial) without being read.
	// Between MaxRequestBytes and MaxReceiveBytes keygate answers with a denial. Default 16 MiB, twice
	// Envoy's largest header limit (max_request_headers_kb 8192), so every CheckRequest Envoy can send
	// without with_request_body gets a denial, never a gRPC error. At least MaxRequestBytes.
	MaxReceiveBytes int `yaml:"max_receive_bytes"`
	// MaxPathBytes bounds the request's :path (query included) in bytes; MaxPathSegments its segments. A
	// longer path is denied (path_too_long) before it is matched. Defaults 8192 and 64 (the identity route
	// table's longest route has 7 segments; common proxies refuse request lines over 8 KiB).
	MaxPathBytes    int `yaml:"max_path_bytes"`
	MaxPathSegments int `yaml:"max_path_segments"`

	// MethodOverride says what to do with a request carrying a method-override header (x-http-method-override,
	// x-http-method, x-method-override), which an upstream may obey instead of the method keygate decided on:
	// "deny" (the default) denies it with ambiguous_request; "remove" decides on the request's own method and
	// removes the headers from an allowed request before it goes upstream.
	MethodOverride string `yaml:"method_override"`
}

// DataAPIConfig restricts OPA's data API (/v1/data).
type DataAPIConfig struct {
	// AllowRawData answers every document, /v1/data itself and the raw data.keygate.db (users,
	// organizations, token ids) included. By default only the decision entrypoints (Entrypoints) answer;
	// other paths get 403.
	AllowRawData bool `yaml:"allow_raw_data"`
}

// MethodOverride values.
const (
	MethodOverrideDeny   = "deny"
	MethodOverrideRemove = "remove"
)

// BundleConfig says where the bundle comes from and how it is verified.
type BundleConfig struct {
	// URL is the bundle's http(s) URL (OPA bundle protocol: ETag / If-None-Match, optional long polling).
	URL string `yaml:"url"`
	// File is a bundle .tar.gz (or directory) on disk, read once at start. Exclusive with URL.
	File string `yaml:"file"`
	// Token, when set, is sent as "Authorization: Bearer <token>" to the bundle server.
	Token string `yaml:"token"`
	// TokenFile is a file holding the bearer token, read before every download (a rotated token is used
	// at once). Exclusive with Token.
	TokenFile string `yaml:"token_file"`
	// CACert is a PEM file of the CAs that sign the bundle server's certificate (https URLs), instead of
	// the system roots.
	CACert string `yaml:"ca_cert"`
	// ClientCert and ClientKey are a PEM client certificate and key presented to the bundle server
	// (mutual TLS); re-read when they change.
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	// VerificationKey is a PEM public key (or HMAC secret) file; when set, unsigned and tampered bundles are
	// rejected and the last good bundle keeps answering.
	VerificationKey string `yaml:"verification_key"`
	// VerificationKeyID is the key id bundles are signed with. Default "keygate".
	VerificationKeyID string `yaml:"verification_key_id"`
	// VerificationAlg is the signing algorithm. Default: by the verification key's type, as keygate serve
	// signs (ES256 for an EC key, RS256 for an RSA key, HS256 for a secret that is not PEM); see
	// DefaultVerificationAlg.
	VerificationAlg string `yaml:"verification_alg"`
	// PersistDir keeps the last activated bundle on disk (URL mode) and uses it at start when the server is
	// unreachable. Empty disables persistence.
	PersistDir string `yaml:"persist_dir"`
	// MinDelay and MaxDelay bound the polling interval (whole seconds). Default 10s and 20s.
	MinDelay time.Duration `yaml:"min_delay"`
	MaxDelay time.Duration `yaml:"max_delay"`
	// LongPollTimeout enables long polling with this server-side wait (whole seconds). 0 disables it.
	LongPollTimeout time.Duration `yaml:"long_poll_timeout"`
}

// DecisionLogConfig configures keygate's side of decision logs; the sinks are OPA's decision_logs plugin
// (decisionlog.go).
type DecisionLogConfig struct {
	// Disabled turns decision logs off (removes OPA's decision_logs section).
	Disabled bool `yaml:"disabled"`
	// QueueSize bounds the entries waiting to be handed to OPA's decision log plugin; past it entries are
	// dropped and counted (keygate_decision_logs_dropped_total{reason="queue_full"}). Default 1024.
	QueueSize int `yaml:"queue_size"`
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.MetadataNamespace == "" {
		c.MetadataNamespace = DefaultMetadataNamespace
	}
	if c.MetadataKey == "" {
		c.MetadataKey = DefaultMetadataKey
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = DefaultCheckTimeout
	}
	if c.DataTimeout == 0 {
		c.DataTimeout = DefaultDataTimeout
	}
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.DecisionLogs.QueueSize == 0 {
		c.DecisionLogs.QueueSize = DefaultDecisionLogQueue
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxReceiveBytes == 0 {
		c.MaxReceiveBytes = max(DefaultMaxReceiveBytes, c.MaxRequestBytes)
	}
	if c.MaxPathBytes == 0 {
		c.MaxPathBytes = envoyauth.DefaultMaxPathBytes
	}
	if c.MaxPathSegments == 0 {
		c.MaxPathSegments = envoyauth.DefaultMaxPathSegments
	}
	if c.MethodOverride == "" {
		c.MethodOverride = DefaultMethodOverride
	}
	if c.DecisionPath == "" {
		c.DecisionPath = DefaultDecisionPath
	}
	b := &c.Bundle
	if b.VerificationKeyID == "" {
		b.VerificationKeyID = DefaultVerificationKeyID
	}
	if b.MinDelay == 0 {
		b.MinDelay = DefaultPollMin
	}
	if b.MaxDelay == 0 {
		b.MaxDelay = DefaultPollMax
	}
	if c.MaxBundleAge == nil {
		d := DefaultMaxBundleAge
		c.MaxBundleAge = &d
	}
	if !c.IdentityFromMetadata {
		c.Identity.SetDefaults()
	}
	c.Tracing.SetDefaults(tracing.ServiceAuthz)
}

// Validate checks the configuration (after SetDefaults) and names the bad key.
func (c *Config) Validate() error {
	if err := c.Tracing.Validate(); err != nil {
		return err
	}
	if _, err := DecisionRef(c.DecisionPath); err != nil {
		return fmt.Errorf("decision_path: %w", err)
	}
	if err := validAddr(c.GRPCAddr); err != nil {
		return fmt.Errorf("grpc_addr: %w", err)
	}
	if err := validAddr(c.HTTPAddr); err != nil {
		return fmt.Errorf("http_addr: %w", err)
	}
	if err := c.GRPCTLS.Validate(); err != nil {
		return fmt.Errorf("grpc_tls.%w", err)
	}
	if c.GRPCTLS.Enabled() && !c.GRPCTLS.MutualTLS() {
		return errors.New("grpc_tls.client_ca_file: required with grpc_tls.cert_file (the ext_authz listener takes mutual TLS only)")
	}
	if err := c.HTTPTLS.Validate(); err != nil {
		return fmt.Errorf("http_tls.%w", err)
	}
	b := c.Bundle
	opa, err := c.opaDocument()
	if err != nil {
		return err
	}
	if err := validateOPADocument(opa); err != nil {
		return err
	}
	opaBundle := sub(opa, "bundles", bundleName) != nil
	switch {
	case b.URL == "" && b.File == "" && !opaBundle:
		return errors.New("bundle.url, bundle.file or OPA's bundles.keygate is required")
	case b.URL != "" && b.File != "":
		return errors.New("bundle.url and bundle.file are mutually exclusive")
	case b.URL != "":
		u, err := url.Parse(b.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("bundle.url: %q is not an http(s) URL", b.URL)
		}
		if u.Scheme != "https" {
			switch {
			case b.CACert != "":
				return errors.New("bundle.ca_cert: needs an https bundle.url")
			case b.ClientCert != "":
				return errors.New("bundle.client_cert: needs an https bundle.url")
			}
		}
	}
	switch {
	case b.Token != "" && b.TokenFile != "":
		return errors.New("bundle.token and bundle.token_file are mutually exclusive")
	case (b.ClientCert == "") != (b.ClientKey == ""):
		return errors.New("bundle.client_cert and bundle.client_key: set both or neither")
	case b.File != "" && (b.Token != "" || b.TokenFile != "" || b.CACert != "" || b.ClientCert != ""):
		return errors.New("bundle.token, token_file, ca_cert, client_cert: only with bundle.url")
	}
	switch b.VerificationAlg {
	case "", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512":
	default:
		return fmt.Errorf("bundle.verification_alg: unsupported algorithm %q", b.VerificationAlg)
	}
	if b.MinDelay < time.Second || b.MinDelay%time.Second != 0 {
		return fmt.Errorf("bundle.min_delay: %s is not a whole number of seconds >= 1s", b.MinDelay)
	}
	if b.MaxDelay < b.MinDelay || b.MaxDelay%time.Second != 0 {
		return fmt.Errorf("bundle.max_delay: %s is not a whole number of seconds >= bundle.min_delay", b.MaxDelay)
	}
	if b.LongPollTimeout < 0 || b.LongPollTimeout%time.Second != 0 {
		return fmt.Errorf("bundle.long_poll_timeout: %s is not a whole number of seconds", b.LongPollTimeout)
	}
	if c.IdentityFromMetadata {
		if c.Identity.Enabled() {
			return errors.New("identity_from_metadata: set together with identity.jwks_file / identity.jwks_url")
		}
	} else {
		if !c.Identity.Enabled() {
			return errors.New("identity.jwks_file or identity.jwks_url is required (or identity_from_metadata: true)")
		}
		if err := c.Identity.Validate(); err != nil {
			return err
		}
	}
	if c.CheckTimeout <= 0 {
		return fmt.Errorf("check_timeout: %s is not positive", c.CheckTimeout)
	}
	if c.DataTimeout <= 0 {
		return fmt.Errorf("data_timeout: %s is not positive", c.DataTimeout)
	}
	if c.Workers < 1 || c.Workers > 1024 {
		return fmt.Errorf("workers: %d is outside [1, 1024]", c.Workers)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout: %s is not positive", c.ShutdownTimeout)
	}
	if c.MaxBundleAge != nil && *c.MaxBundleAge < 0 {
		return fmt.Errorf("max_bundle_age: %s is negative", *c.MaxBundleAge)
	}
	if c.DecisionLogs.QueueSize < 1 {
		return fmt.Errorf("decision_logs.queue_size: %d is below 1", c.DecisionLogs.QueueSize)
	}
	if c.MaxRequestBytes < 1 {
		return fmt.Errorf("max_request_bytes: %d is below 1", c.MaxRequestBytes)
	}
	if c.MaxReceiveBytes < c.MaxRequestBytes || c.MaxReceiveBytes > 1<<30 {
		return fmt.Errorf("max_receive_bytes: %d is outside [max_request_bytes (%d), 1 GiB]", c.MaxReceiveBytes,
			c.MaxRequestBytes)
	}
	if c.MaxPathBytes < 1 {
		return fmt.Errorf("max_path_bytes: %d is below 1", c.MaxPathBytes)
	}
	if c.MaxPathSegments < 1 {
		return fmt.Errorf("max_path_segments: %d is below 1", c.MaxPathSegments)
	}
	switch c.MethodOverride {
	case MethodOverrideDeny, MethodOverrideRemove:
	default:
		return fmt.Errorf("method_override: %q is neither %q nor %q", c.MethodOverride, MethodOverrideDeny,
			MethodOverrideRemove)
	}
	return nil
}

func validAddr(a string) error {
	if p, ok := strings.CutPrefix(a, "unix://"); ok {
		if p == "" || p[0] != '/' {
			return fmt.Errorf("%q: unix:// needs an absolute path", a)
		}
		return nil
	}
	if !strings.Contains(a, ":") {
		return fmt.Errorf("%q is not host:port or unix:///path", a)
	}
	return nil
}

// DecisionRef turns a slash-separated decision path (opa-envoy-plugin's path: "keygate/envoy/response", a
// leading "/" allowed) into its data reference ("data.keygate.envoy.response").
func DecisionRef(path string) (string, error) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, seg := range segs {
		if seg == "" || strings.ContainsFunc(seg, unicode.IsSpace) {
			return "", fmt.Errorf("%q is not a path like keygate/envoy/response", path)
		}
		ref = append(ref, ast.StringTerm(seg))
	}
	s := ref.String()
	if parsed, err := ast.ParseRef(s); err != nil || !parsed.Equal(ref) {
		return "", fmt.Errorf("%q is not a valid reference", path)
	}
	return s, nil
}
