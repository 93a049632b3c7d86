package main

import (
	"bytes"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/internal/sidecar"
)

func init() { register(newAuthzCmd) }

// loadSidecarConfig reads an optional YAML config file (unknown keys are errors).
func loadSidecarConfig(path string) (sidecar.Config, error) {
	var cfg sidecar.Config
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, usageErr("--config: %v", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, usageErr("--config %s: %v", path, err)
	}
	return cfg, nil
}

// setGCPercent applies --gc-percent unless the operator set GOGC.
func setGCPercent(e *env, percent int) {
	if e.getenv("GOGC") != "" || percent == 0 {
		return
	}
	debug.SetGCPercent(percent)
}

func newAuthzCmd(e *env) *cobra.Command {
	var (
		configFile string
		opaFile    string
		sets       []string
		maxAge     time.Duration
		fl         sidecar.Config
		audiences  []string
		gcPercent  int
	)
	cmd := &cobra.Command{
		Use:   "authz (--bundle-url URL | --bundle-file FILE) (--jwks-file FILE | --jwks-url URL | --identity-from-metadata)",
		Short: "Run the authorization sidecar: Envoy ext_authz v3 on gRPC, OPA's data API, /health and /metrics on HTTP",
		Long: `Run keygate's sidecar next to Envoy. It follows a bundle (from a bundle server with ETag and optional
long polling, or from a file), verifies its signature when --verification-key is set (unsigned or tampered
bundles are rejected and the last good one keeps answering), keeps the last good bundle in --persist-dir, and
answers Envoy's ext_authz Check from data.keygate.envoy.response. --config-file takes OPA's configuration
format (services, bundles, keys, decision_logs, status, labels) with keygate's keys under keygate:, and --set
overrides it as OPA's --set does. Flags override the configuration files.`,
		Example: `  keygate authz --bundle-url http://127.0.0.1:8282/bundles/keygate.tar.gz --verification-key bundle.pub \
      --persist-dir /var/lib/keygate --jwks-url https://idp.example/.well-known/jwks.json --issuer https://idp.example`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" && (opaFile != "" || len(sets) > 0) {
				return usageErr("--config (keygate's YAML) and --config-file / --set (OPA's format) are exclusive")
			}
			cfg, err := loadSidecarConfig(configFile)
			if err != nil {
				return err
			}
			if opaFile != "" || len(sets) > 0 {
				if cfg, err = sidecar.LoadConfig(opaFile, sets); err != nil {
					return usageErr("%v", err)
				}
			}
			applyAuthzFlags(cmd.Flags(), &cfg, &fl, audiences)
			if cmd.Flags().Changed("max-bundle-age") {
				cfg.MaxBundleAge = &maxAge
			}
			if tok := e.getenv("KEYGATE_BUNDLE_TOKEN"); tok != "" && cfg.Bundle.URL != "" && cfg.Bundle.Token == "" && cfg.Bundle.TokenFile == "" {
				cfg.Bundle.Token = tok
			}
			cfg.SetDefaults()
			if err := cfg.Validate(); err != nil {
				return usageErr("%v", err)
			}
			setGCPercent(e, gcPercent)
			return sidecar.Run(cmd.Context(), cfg, e.logger)
		},
	}
	f := cmd.Flags()
	f.IntVar(&gcPercent, "gc-percent", 400, "Go GC target percentage when $GOGC is unset (a Check allocates ~16 KiB; collecting less often saves CPU; GOMEMLIMIT still bounds the heap)")
	f.StringVar(&configFile, "config", "", "YAML config file (keys as in sidecar.Config: grpc_addr, bundle.url, identity.jwks_file, ...)")
	f.StringVar(&opaFile, "config-file", "", "configuration in OPA's format (services, bundles, keys, decision_logs, status, labels; keygate's own keys under keygate:)")
	f.StringArrayVar(&sets, "set", nil, "override a configuration value, OPA's --set: key.path=value[,key.path=value] (repeatable)")
	f.DurationVar(&maxAge, "max-bundle-age", sidecar.DefaultMaxBundleAge, "readiness fails once the bundle server has not confirmed the active bundle for this long (0 = off: fail-static)")
	f.StringVar(&fl.GRPCAddr, "grpc-addr", sidecar.DefaultGRPCAddr, "ext_authz gRPC listener: host:port or unix:///path")
	f.StringVar(&fl.HTTPAddr, "http-addr", sidecar.DefaultHTTPAddr, "data API / health / metrics listener: host:port or unix:///path")
	f.StringVar(&fl.Bundle.URL, "bundle-url", "", "bundle URL on a bundle server (keygate serve)")
	f.StringVar(&fl.Bundle.File, "bundle-file", "", "bundle file (.tar.gz) instead of a URL")
	f.StringVar(&fl.Bundle.Token, "bundle-token", "", "bearer token for the bundle server (default $KEYGATE_BUNDLE_TOKEN; prefer --bundle-token-file: a flag shows in ps)")
	f.StringVar(&fl.Bundle.TokenFile, "bundle-token-file", "", "file holding the bundle server's bearer token, read before every download")
	f.StringVar(&fl.Bundle.CACert, "bundle-ca-cert", "", "PEM CA(s) the bundle server's certificate is checked against (instead of the system roots)")
	f.StringVar(&fl.Bundle.ClientCert, "bundle-client-cert", "", "PEM client certificate presented to the bundle server (with --bundle-client-key)")
	f.StringVar(&fl.Bundle.ClientKey, "bundle-client-key", "", "PEM private key of --bundle-client-cert")
	f.StringVar(&fl.GRPCTLS.CertFile, "grpc-tls-cert", "", "serve ext_authz over mutual TLS with this PEM certificate (needs --grpc-tls-key and --grpc-tls-client-ca)")
	f.StringVar(&fl.GRPCTLS.KeyFile, "grpc-tls-key", "", "PEM private key of --grpc-tls-cert")
	f.StringVar(&fl.GRPCTLS.ClientCAFile, "grpc-tls-client-ca", "", "PEM CA(s) of the clients' (Envoy's) certificates")
	f.StringVar(&fl.HTTPTLS.CertFile, "http-tls-cert", "", "serve the data API / health / metrics over TLS with this PEM certificate")
	f.StringVar(&fl.HTTPTLS.KeyFile, "http-tls-key", "", "PEM private key of --http-tls-cert")
	f.StringVar(&fl.HTTPTLS.ClientCAFile, "http-tls-client-ca", "", "require HTTP clients to present a certificate of these PEM CA(s)")
	f.BoolVar(&fl.DataAPI.AllowRawData, "data-api-raw", false, "let /v1/data answer every document, the raw data (users, orgs, token ids) included; by default only decision entrypoints")
	f.StringVar(&fl.Bundle.VerificationKey, "verification-key", "", "verify bundle signatures with this PEM public key (or HMAC secret) file")
	f.StringVar(&fl.Bundle.VerificationKeyID, "verification-key-id", sidecar.DefaultVerificationKeyID, "key id bundles are signed with")
	f.StringVar(&fl.Bundle.VerificationAlg, "verification-alg", "", "bundle signing algorithm (default: by the verification key, as keygate serve signs: ES256 for EC, RS256 for RSA, HS256 for a non-PEM secret)")
	f.StringVar(&fl.Bundle.PersistDir, "persist-dir", "", "keep the last good bundle here and use it when the server is unreachable at start")
	f.DurationVar(&fl.Bundle.MinDelay, "poll-min", sidecar.DefaultPollMin, "minimum polling delay (whole seconds)")
	f.DurationVar(&fl.Bundle.MaxDelay, "poll-max", sidecar.DefaultPollMax, "maximum polling delay (whole seconds)")
	f.DurationVar(&fl.Bundle.LongPollTimeout, "long-poll", 0, "long polling timeout (whole seconds; 0 = plain polling)")
	f.StringVar(&fl.Identity.JWKSFile, "jwks-file", "", "JSON Web Key Set file to verify bearer JWTs")
	f.StringVar(&fl.Identity.JWKSURL, "jwks-url", "", "JSON Web Key Set URL (refreshed in the background)")
	f.DurationVar(&fl.Identity.JWKSRefresh, "jwks-refresh", 5*time.Minute, "minimum interval between JWKS refreshes")
	f.StringVar(&fl.Identity.Issuer, "issuer", "", "required iss claim")
	f.StringSliceVar(&audiences, "audience", nil, "accepted aud claim (repeatable)")
	f.DurationVar(&fl.Identity.ClockSkew, "clock-skew", 30*time.Second, "leeway on exp and nbf")
	f.BoolVar(&fl.IdentityFromMetadata, "identity-from-metadata", false, "take the subject from Envoy jwt_authn's payload_in_metadata instead of verifying the bearer token")
	f.StringVar(&fl.MetadataKey, "metadata-key", sidecar.DefaultMetadataKey, "jwt_authn payload_in_metadata name")
	f.BoolVar(&fl.DryRun, "dry-run", false, "allow everything; log and count (result=dry_run) what would be denied")
	f.DurationVar(&fl.CheckTimeout, "check-timeout", sidecar.DefaultCheckTimeout, "deadline of one Check's evaluation")
	f.IntVar(&fl.Workers, "workers", 0, "evaluation goroutines (0 = GOMAXPROCS)")
	f.DurationVar(&fl.ShutdownTimeout, "shutdown-timeout", sidecar.DefaultShutdownTimeout, "graceful shutdown bound")
	f.BoolVar(&fl.DecisionLogs.Disabled, "no-decision-logs", false, "disable decision logs")
	f.IntVar(&fl.DecisionLogs.QueueSize, "decision-log-queue", sidecar.DefaultDecisionLogQueue, "decision log queue bound (entries past it are dropped and counted)")
	addTracingFlags(f, &fl.Tracing, new(float64)) // applyAuthzFlags reads the ratio by name
	return cmd
}

// applyAuthzFlags copies the flags the user set onto cfg (the config file's values otherwise stand).
func applyAuthzFlags(fs *pflag.FlagSet, cfg, fl *sidecar.Config, audiences []string) {
	set := func(name string, apply func()) {
		if fs.Changed(name) {
			apply()
		}
	}
	set("grpc-addr", func() { cfg.GRPCAddr = fl.GRPCAddr })
	set("http-addr", func() { cfg.HTTPAddr = fl.HTTPAddr })
	set("bundle-url", func() { cfg.Bundle.URL = fl.Bundle.URL })
	set("bundle-file", func() { cfg.Bundle.File = fl.Bundle.File })
	set("bundle-token", func() { cfg.Bundle.Token = fl.Bundle.Token })
	set("bundle-token-file", func() { cfg.Bundle.TokenFile = fl.Bundle.TokenFile })
	set("bundle-ca-cert", func() { cfg.Bundle.CACert = fl.Bundle.CACert })
	set("bundle-client-cert", func() { cfg.Bundle.ClientCert = fl.Bundle.ClientCert })
	set("bundle-client-key", func() { cfg.Bundle.ClientKey = fl.Bundle.ClientKey })
	set("grpc-tls-cert", func() { cfg.GRPCTLS.CertFile = fl.GRPCTLS.CertFile })
	set("grpc-tls-key", func() { cfg.GRPCTLS.KeyFile = fl.GRPCTLS.KeyFile })
	set("grpc-tls-client-ca", func() { cfg.GRPCTLS.ClientCAFile = fl.GRPCTLS.ClientCAFile })
	set("http-tls-cert", func() { cfg.HTTPTLS.CertFile = fl.HTTPTLS.CertFile })
	set("http-tls-key", func() { cfg.HTTPTLS.KeyFile = fl.HTTPTLS.KeyFile })
	set("http-tls-client-ca", func() { cfg.HTTPTLS.ClientCAFile = fl.HTTPTLS.ClientCAFile })
	set("data-api-raw", func() { cfg.DataAPI.AllowRawData = fl.DataAPI.AllowRawData })
	set("verification-key", func() { cfg.Bundle.VerificationKey = fl.Bundle.VerificationKey })
	set("verification-key-id", func() { cfg.Bundle.VerificationKeyID = fl.Bundle.VerificationKeyID })
	set("verification-alg", func() { cfg.Bundle.VerificationAlg = fl.Bundle.VerificationAlg })
	set("persist-dir", func() { cfg.Bundle.PersistDir = fl.Bundle.PersistDir })
	set("poll-min", func() { cfg.Bundle.MinDelay = fl.Bundle.MinDelay })
	set("poll-max", func() { cfg.Bundle.MaxDelay = fl.Bundle.MaxDelay })
	set("long-poll", func() { cfg.Bundle.LongPollTimeout = fl.Bundle.LongPollTimeout })
	set("jwks-file", func() { cfg.Identity.JWKSFile = fl.Identity.JWKSFile })
	set("jwks-url", func() { cfg.Identity.JWKSURL = fl.Identity.JWKSURL })
	set("jwks-refresh", func() { cfg.Identity.JWKSRefresh = fl.Identity.JWKSRefresh })
	set("issuer", func() { cfg.Identity.Issuer = fl.Identity.Issuer })
	set("audience", func() { cfg.Identity.Audiences = audiences })
	set("clock-skew", func() { cfg.Identity.ClockSkew = fl.Identity.ClockSkew })
	set("identity-from-metadata", func() { cfg.IdentityFromMetadata = fl.IdentityFromMetadata })
	set("metadata-key", func() { cfg.MetadataKey = fl.MetadataKey })
	set("dry-run", func() { cfg.DryRun = fl.DryRun })
	set("check-timeout", func() { cfg.CheckTimeout = fl.CheckTimeout })
	set("workers", func() { cfg.Workers = fl.Workers })
	set("shutdown-timeout", func() { cfg.ShutdownTimeout = fl.ShutdownTimeout })
	set("no-decision-logs", func() { cfg.DecisionLogs.Disabled = fl.DecisionLogs.Disabled })
	set("decision-log-queue", func() { cfg.DecisionLogs.QueueSize = fl.DecisionLogs.QueueSize })
	set("tracing-endpoint", func() { cfg.Tracing.Endpoint = fl.Tracing.Endpoint; cfg.Tracing.Enabled = fl.Tracing.Endpoint != "" })
	set("tracing-insecure", func() { cfg.Tracing.Insecure = fl.Tracing.Insecure })
	set("tracing-sample-ratio", func() {
		r, _ := fs.GetFloat64("tracing-sample-ratio")
		cfg.Tracing.SampleRatio = &r
	})
}
