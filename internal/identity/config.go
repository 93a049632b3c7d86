// Package identity verifies bearer JWTs against a JSON Web Key Set (from a file or a URL refreshed in the
// background) and names every rejection with a reason from a closed set.
package identity

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// Config configures bearer token verification. The zero value plus SetDefaults is a valid "no JWKS"
// configuration only when Disabled is true; otherwise exactly one of JWKSFile and JWKSURL is required.
type Config struct {
	// JWKSFile is a JSON Web Key Set (or a single JWK, or PEM public keys) on disk. Read once at start.
	JWKSFile string `yaml:"jwks_file" json:"jwks_file"`
	// JWKSURL is fetched at start and refreshed in the background (Cache-Control aware, bounded by
	// JWKSRefresh). Verification uses the last set fetched successfully.
	JWKSURL string `yaml:"jwks_url" json:"jwks_url"`
	// JWKSRefresh is the minimum interval between background refreshes of JWKSURL. Default 5m.
	JWKSRefresh time.Duration `yaml:"jwks_refresh" json:"jwks_refresh"`
	// Issuer, when set, must equal the token's iss claim.
	Issuer string `yaml:"issuer" json:"issuer"`
	// Audiences, when set, must contain one of the token's aud values.
	Audiences []string `yaml:"audiences" json:"audiences"`
	// ClockSkew is the leeway allowed on exp and nbf. Default 30s; at most 5m.
	ClockSkew time.Duration `yaml:"clock_skew" json:"clock_skew"`
	// Algorithms is the allow list of JWS algorithms. Default: the asymmetric ones (RS*, PS*, ES*, EdDSA).
	// "none" is never accepted.
	Algorithms []string `yaml:"algorithms" json:"algorithms"`
	// CacheSize bounds the cache of verified tokens (an entry lives until min(exp, CacheTTL)). 0 = default
	// 10000; negative disables the cache.
	CacheSize int `yaml:"cache_size" json:"cache_size"`
	// CacheTTL bounds how long a verified token is trusted without verifying its signature again. Default 1m.
	CacheTTL time.Duration `yaml:"cache_ttl" json:"cache_ttl"`
}

// DefaultAlgorithms are the JWS algorithms accepted unless Config.Algorithms says otherwise.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

var knownAlgorithms = append(slices.Clone(DefaultAlgorithms), "HS256", "HS384", "HS512")

// SetDefaults fills unset fields with their defaults.
func (c *Config) SetDefaults() {
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = 5 * time.Minute
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = 30 * time.Second
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = slices.Clone(DefaultAlgorithms)
	}
	if c.CacheSize == 0 {
		c.CacheSize = 10000
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = time.Minute
	}
}

// Enabled reports whether a key set is configured.
func (c *Config) Enabled() bool { return c.JWKSFile != "" || c.JWKSURL != "" }

// Validate checks the configuration and names the offending key (prefix "identity.").
func (c *Config) Validate() error {
	if c.JWKSFile != "" && c.JWKSURL != "" {
		return errors.New("identity.jwks_file and identity.jwks_url are mutually exclusive")
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("identity.jwks_url: %q is not an http(s) URL", c.JWKSURL)
		}
	}
	if c.JWKSRefresh < time.Second {
		return fmt.Errorf("identity.jwks_refresh: %s is below 1s", c.JWKSRefresh)
	}
	if c.ClockSkew < 0 || c.ClockSkew > 5*time.Minute {
		return fmt.Errorf("identity.clock_skew: %s is outside [0, 5m]", c.ClockSkew)
	}
	if c.CacheTTL < 0 {
		return fmt.Errorf("identity.cache_ttl: %s is negative", c.CacheTTL)
	}
	for _, a := range c.Algorithms {
		if !slices.Contains(knownAlgorithms, a) {
			return fmt.Errorf("identity.algorithms: unsupported algorithm %q (want one of %v)", a, knownAlgorithms)
		}
	}
	return nil
}
