// Package sidecar is keygate's authorization sidecar: an embedded OPA that follows a bundle (URL or file,
// signature-verified, persisted), answers Envoy ext_authz v3 Check on gRPC and OPA's data API, /health and
// /metrics on HTTP.
package sidecar

import (
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/identity"
)

// Config configures the sidecar. Zero fields take the defaults of SetDefaults.
type Config struct {
	// GRPCAddr is the ext_authz listener: host:port or unix:///path. Default 127.0.0.1:9191.
	GRPCAddr string `yaml:"grpc_addr"`
	// HTTPAddr is the data API / health / metrics listener: host:port or unix:///path. Default 127.0.0.1:8181.
	HTTPAddr string `yaml:"http_addr"`

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
}

// BundleConfig says where the bundle comes from and how it is verified.
type BundleConfig struct {
	// URL is the bundle's http(s) URL (OPA bundle protocol: ETag / If-None-Match, optional long polling).
	URL string `yaml:"url"`
	// File is a bundle .tar.gz (or directory) on disk, read once at start. Exclusive with URL.
	File string `yaml:"file"`
	// Token, when set, is sent as "Authorization: Bearer <token>" to the bundle server.
	Token string `yaml:"token"`
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

// DecisionLogConfig configures decision logs (slog records "decision").
type DecisionLogConfig struct {
	// Disabled turns decision logs off.
	Disabled bool `yaml:"disabled"`
	// QueueSize bounds the entries waiting to be written; past it entries are dropped and counted.
	// Default 1024.
	QueueSize int `yaml:"queue_size"`
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:9191"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8181"
	}
	if c.MetadataNamespace == "" {
		c.MetadataNamespace = "envoy.filters.http.jwt_authn"
	}
	if c.MetadataKey == "" {
		c.MetadataKey = "verified_jwt"
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 100 * time.Millisecond
	}
	if c.DataTimeout == 0 {
		c.DataTimeout = 5 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.DecisionLogs.QueueSize == 0 {
		c.DecisionLogs.QueueSize = 1024
	}
	b := &c.Bundle
	if b.VerificationKeyID == "" {
		b.VerificationKeyID = "keygate"
	}
	if b.MinDelay == 0 {
		b.MinDelay = 10 * time.Second
	}
	if b.MaxDelay == 0 {
		b.MaxDelay = 20 * time.Second
	}
	if !c.IdentityFromMetadata {
		c.Identity.SetDefaults()
	}
}

// Validate checks the configuration (after SetDefaults) and names the bad key.
func (c *Config) Validate() error {
	if err := validAddr(c.GRPCAddr); err != nil {
		return fmt.Errorf("grpc_addr: %w", err)
	}
	if err := validAddr(c.HTTPAddr); err != nil {
		return fmt.Errorf("http_addr: %w", err)
	}
	b := c.Bundle
	switch {
	case b.URL == "" && b.File == "":
		return errors.New("bundle.url or bundle.file is required")
	case b.URL != "" && b.File != "":
		return errors.New("bundle.url and bundle.file are mutually exclusive")
	case b.URL != "":
		u, err := url.Parse(b.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("bundle.url: %q is not an http(s) URL", b.URL)
		}
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
	if c.DecisionLogs.QueueSize < 1 {
		return fmt.Errorf("decision_logs.queue_size: %d is below 1", c.DecisionLogs.QueueSize)
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
