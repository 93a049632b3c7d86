// Package bundleserver serves keygate's OPA bundle over HTTP: it builds the bundle (snapshot -> resolve ->
// compile -> sign) at start and on every Trigger, keeps serving the last good bundle when a build fails, and
// answers OPA's bundle protocol (ETag / If-None-Match, long polling with "Prefer: wait=N") at
// GET /bundles/keygate.tar.gz, with /health and /metrics beside it.
//
// A client at a revision the server retains gets a delta bundle (DeltaConfig) instead of the snapshot.
package bundleserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/tlsconfig"
	"github.com/keygate/keygate/internal/tracing"
)

// MinTokenLength is the shortest bearer token the server accepts in its configuration.
const MinTokenLength = 16

// BundlePath is where the bundle is served.
const BundlePath = "/bundles/keygate.tar.gz"

// Defaults of Config.
const (
	DefaultAddr            = "127.0.0.1:8282"
	DefaultMaxWait         = 60 * time.Second
	DefaultBuildTimeout    = 2 * time.Minute
	DefaultRetryInterval   = 10 * time.Second
	DefaultSourceRetryMin  = 100 * time.Millisecond
	DefaultSourceRetryMax  = time.Second
	DefaultProbeInterval   = time.Second
	DefaultProbeTimeout    = 2 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
)

// Config configures a Server. Zero fields take their defaults (see SetDefaults).
type Config struct {
	// Addr is the HTTP listener, host:port. Default 127.0.0.1:8282; port 0 picks a free port.
	Addr string `yaml:"addr"`
	// TLS serves HTTPS with this certificate. With client_ca_file, a client certificate that CA signs
	// authenticates a client (an invalid certificate fails the handshake; none at all leaves the bearer
	// token to authenticate).
	TLS tlsconfig.Server `yaml:"tls"`
	// Auth says who may download bundles.
	Auth AuthConfig `yaml:"auth"`
	// Build holds the compiler options: the signing key (PEM private key or HMAC secret), algorithm and key
	// id. Unsigned bundles when Build.SigningKey is empty.
	Build compiler.Options `yaml:"-"`
	// MaxWait caps the long-polling wait a client asks for with "Prefer: wait=N". Default 60s.
	MaxWait time.Duration `yaml:"max_wait"`
	// BuildTimeout bounds one build (snapshot + compile + sign). Default 2m.
	BuildTimeout time.Duration `yaml:"build_timeout"`
	// RetryInterval is how long after a build that failed on the data (validation, compilation) the server
	// tries again by itself (a Trigger retries at once). Default 10s; negative disables the retry.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// SourceRetryMin and SourceRetryMax bound the backoff after a build that failed reading the source (the
	// database down, a dead pooled connection): the first retry comes after SourceRetryMin, each next one
	// waits twice as long (with jitter, over [d/2, d]) up to SourceRetryMax. Defaults 100ms and 1s.
	SourceRetryMin time.Duration `yaml:"source_retry_min"`
	SourceRetryMax time.Duration `yaml:"source_retry_max"`
	// Probe checks that the source is reachable (a database ping); it runs every ProbeInterval, drives
	// keygate_source_up and keygate_source_staleness_seconds between builds, and triggers a rebuild when the
	// source comes back. Nil: the source is always up (a seed file).
	Probe func(ctx context.Context) error `yaml:"-"`
	// ProbeInterval is the period of Probe. Default 1s.
	ProbeInterval time.Duration `yaml:"probe_interval"`
	// ProbeTimeout bounds one Probe call. Default 2s.
	ProbeTimeout time.Duration `yaml:"probe_timeout"`
	// ShutdownTimeout bounds the graceful shutdown of the HTTP server. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Deltas configures delta bundles: on by default for unsigned bundles, off for signed ones.
	Deltas DeltaConfig `yaml:"deltas"`
	// Source reads the data snapshot (without the built-in catalogue, which the build adds). Required.
	Source func(ctx context.Context) (model.Snapshot, error) `yaml:"-"`
	// Tracer, when set, records a keygate.build span per build (the caller shuts it down). Nil: no tracing.
	Tracer *tracing.Tracer `yaml:"-"`
}

// AuthConfig turns client authentication on: when any token or a client CA (TLS.ClientCAFile) is set,
// every path but /health (and /metrics with PublicMetrics) answers 401 without a valid bearer token or
// client certificate. Without either, anyone who reaches the server downloads the bundle.
type AuthConfig struct {
	// Tokens are accepted bearer tokens ("Authorization: Bearer <token>"); several during a rotation. Not
	// read from YAML: secrets come from TokenFiles or the environment.
	Tokens []string `yaml:"-"`
	// TokenFiles hold accepted tokens, one per line (blank lines and lines starting with # are skipped),
	// read by New and re-read when they change (a file that stops parsing keeps its last good tokens).
	TokenFiles []string `yaml:"token_files"`
	// PublicMetrics serves /metrics without authentication (Prometheus without credentials).
	PublicMetrics bool `yaml:"public_metrics"`
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.BuildTimeout == 0 {
		c.BuildTimeout = DefaultBuildTimeout
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.SourceRetryMin == 0 {
		c.SourceRetryMin = DefaultSourceRetryMin
	}
	if c.SourceRetryMax == 0 {
		c.SourceRetryMax = max(DefaultSourceRetryMax, c.SourceRetryMin)
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	c.Deltas.setDefaults()
}

// Validate checks the configuration (after SetDefaults) and names the bad key. It fills in the compiler's
// defaults (algorithm and key id).
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil || strings.HasPrefix(c.Addr, "unix:") {
		return fmt.Errorf("addr: %q is not host:port", c.Addr)
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("tls.%w", err)
	}
	for i, t := range c.Auth.Tokens {
		if err := validToken(t); err != nil {
			return fmt.Errorf("auth.tokens[%d]: %w", i, err)
		}
	}
	if err := c.Build.Validate(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if c.MaxWait < 0 {
		return fmt.Errorf("max_wait: %s is negative", c.MaxWait)
	}
	if c.BuildTimeout <= 0 {
		return fmt.Errorf("build_timeout: %s is not positive", c.BuildTimeout)
	}
	if c.SourceRetryMin <= 0 {
		return fmt.Errorf("source_retry_min: %s is not positive", c.SourceRetryMin)
	}
	if c.SourceRetryMax < c.SourceRetryMin {
		return fmt.Errorf("source_retry_max: %s is less than source_retry_min %s", c.SourceRetryMax, c.SourceRetryMin)
	}
	if c.ProbeInterval <= 0 {
		return fmt.Errorf("probe_interval: %s is not positive", c.ProbeInterval)
	}
	if c.ProbeTimeout <= 0 {
		return fmt.Errorf("probe_timeout: %s is not positive", c.ProbeTimeout)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout: %s is not positive", c.ShutdownTimeout)
	}
	if err := c.Deltas.validate(); err != nil {
		return err
	}
	if c.Source == nil {
		return errors.New("source: required")
	}
	return nil
}

func validToken(t string) error {
	if len(t) < MinTokenLength {
		return fmt.Errorf("shorter than %d characters", MinTokenLength)
	}
	if strings.ContainsAny(t, " \t\r\n") {
		return errors.New("contains white space")
	}
	return nil
}
