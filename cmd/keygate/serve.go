package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/store"
	"github.com/keygate/keygate/internal/tracing"
)

func init() { register(newServeCmd) }

// signingFlags are the bundle signing options of build-like commands.
type signingFlags struct{ keyFile, alg, kid string }

func (s *signingFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.keyFile, "signing-key", "", "sign bundles with this private key (PEM, RSA or EC) or HMAC secret file")
	cmd.Flags().StringVar(&s.alg, "signing-alg", "", "signature algorithm (default RS256 / ES256 / HS256 by key type)")
	cmd.Flags().StringVar(&s.kid, "key-id", "keygate", "key id recorded in the signature")
}

// options reads the key and checks the options (bad usage when they do not hold).
func (s *signingFlags) options() (compiler.Options, error) {
	opts := compiler.Options{SigningAlg: s.alg, KeyID: s.kid}
	if s.keyFile != "" {
		k, err := os.ReadFile(s.keyFile)
		if err != nil {
			return opts, usageErr("--signing-key: %v", err)
		}
		opts.SigningKey = k
	}
	if err := opts.Validate(); err != nil {
		return opts, usageErr("%v", err)
	}
	return opts, nil
}

func newServeCmd(e *env) *cobra.Command {
	var (
		src      sourceFlags
		sign     signingFlags
		cfg      bundleserver.Config
		debounce time.Duration
		rebuild  time.Duration
		watch    bool
		trc      tracing.Config
		ratio    float64
	)
	cmd := &cobra.Command{
		Use:   "serve (--seed FILE | --database-url URL) [--signing-key PEM] [--addr HOST:PORT]",
		Short: "Run the bundle server: build the (signed) OPA bundle and serve it to the sidecars",
		Long: `Serve the OPA bundle at GET /bundles/keygate.tar.gz (ETag = the content-hash revision, If-None-Match -> 304,
OPA long polling with "Prefer: wait=N"), /health (200 once a bundle is built) and /metrics.

With --database-url the bundle is rebuilt when the database changes (LISTEN/NOTIFY, debounced) and every
--rebuild-interval as a safety net; the database is pinged every second (keygate_source_up, /health), and a
failed build (database down, invalid data) keeps the last good bundle served. With --seed the file is read at
start, again on SIGHUP, and whenever it changes with --watch; a bad file keeps the last good bundle (the error is
logged and on /health). A seed without routes gets the built-in identity API route table. SIGHUP rebuilds from
the database too.

A client at a revision the server retains (--delta-revisions, --delta-max-bytes) gets a delta bundle (OPA's
patch.json format) instead of the snapshot: by default only when the bundles are unsigned, since OPA cannot
verify a delta (--deltas on sends them with signed snapshots too; verifying clients must then set
allow_unsigned_delta_bundles and reach the server over an authenticated channel). A client adding
?mode=snapshot to the bundle URL always gets the snapshot.

With --token-file (or $KEYGATE_BUNDLE_TOKENS) or --tls-client-ca, every path but /health (and /metrics with
--public-metrics) answers 401 without a listed bearer token or a client certificate the CA signed; --tls-cert
and --tls-key serve HTTPS (TLS 1.2+). See docs/security.md.`,
		Example: `  keygate serve --database-url postgres://keygate@db/keygate --signing-key signing-key.pem --addr 0.0.0.0:8282 \
      --tls-cert tls.crt --tls-key tls.key --tls-client-ca sidecars-ca.pem --token-file /etc/keygate/tokens`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := src.resolve(); err != nil {
				return err
			}
			if src.seed == "" && src.databaseURL == "" {
				return usageErr("give --seed FILE or --database-url URL (or $KEYGATE_DATABASE_URL)")
			}
			opts, err := sign.options()
			if err != nil {
				return err
			}
			cfg.Build = opts
			tracer, flush, err := startServeTracing(ctx, cmd.Flags(), trc, ratio, e.logger)
			if err != nil {
				return err
			}
			defer flush()
			cfg.Tracer = tracer
			if env := e.getenv("KEYGATE_BUNDLE_TOKENS"); env != "" {
				toks, err := bundleserver.ReadTokens([]byte(strings.ReplaceAll(env, ",", "\n")))
				if err != nil {
					return usageErr("$KEYGATE_BUNDLE_TOKENS: %v", err)
				}
				cfg.Auth.Tokens = append(cfg.Auth.Tokens, toks...)
			}
			var wcfg store.Config
			var pool *pgxpool.Pool
			if src.seed != "" {
				path := src.seed
				cfg.Source = func(context.Context) (model.Snapshot, error) {
					return readSeed(path, func(msg string) { e.logger.Warn(msg) })
				}
			} else {
				if err := checkDatabaseURL(src.databaseURL); err != nil {
					return err
				}
				wcfg = store.Config{DatabaseURL: src.databaseURL, Debounce: debounce, Rebuild: rebuild, Logger: e.logger}
				if err := wcfg.Validate(); err != nil {
					return usageErr("%v", err)
				}
				if watch {
					return usageErr("--watch follows a --seed file; the database is followed with LISTEN/NOTIFY")
				}
				// A lazily connecting pool: the server starts (and says why it is not ready) while the database
				// is down.
				pcfg, err := pgxpool.ParseConfig(src.databaseURL)
				if err != nil {
					return usageErr("--database-url: %v", err)
				}
				// Ping every connection handed out (pgx's default: only after 1s idle): a connection the
				// server terminated is replaced inside Acquire instead of failing the next build.
				pcfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
				pool, err = pgxpool.NewWithConfig(ctx, pcfg)
				if err != nil {
					return usageErr("--database-url: %v", err)
				}
				defer pool.Close()
				cfg.Source = func(ctx context.Context) (model.Snapshot, error) { return store.Snapshot(ctx, pool) }
			}
			var w *store.Watcher
			if wcfg.DatabaseURL != "" {
				// Triggers go to the server, created next; a watcher waiting to reconnect retries at once when
				// the probe sees the database answer again.
				var srv *bundleserver.Server
				if w, err = store.NewWatcher(wcfg, func() { srv.Trigger() }); err != nil {
					return usageErr("%v", err)
				}
				cfg.Probe = func(ctx context.Context) error {
					if err := pool.Ping(ctx); err != nil {
						return err
					}
					w.Wake()
					return nil
				}
				if srv, err = bundleserver.New(cfg, e.logger); err != nil {
					return usageErr("%v", err)
				}
				return serveBundles(ctx, srv, w, "", e)
			}
			srv, err := bundleserver.New(cfg, e.logger)
			if err != nil {
				return usageErr("%v", err)
			}
			watched := ""
			if watch {
				watched = src.seed
			}
			return serveBundles(ctx, srv, nil, watched, e)
		},
	}
	src.register(cmd, e)
	cmd.Flags().Lookup("seed").Usage = "seed file (YAML or JSON), read at start; serve needs it or a database URL"
	sign.register(cmd)
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", bundleserver.DefaultAddr, "HTTP listener host:port")
	addTracingFlags(f, &trc, &ratio)
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "serve HTTPS with this PEM certificate (chain)")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&cfg.TLS.ClientCAFile, "tls-client-ca", "", "PEM CA(s) whose client certificates authenticate a sidecar (mutual TLS)")
	f.StringArrayVar(&cfg.Auth.TokenFiles, "token-file", nil, "require a bearer token listed in this file (one per line, re-read when it changes; repeatable; $KEYGATE_BUNDLE_TOKENS adds comma-separated tokens)")
	f.BoolVar(&cfg.Auth.PublicMetrics, "public-metrics", false, "serve /metrics without authentication when tokens or a client CA are set")
	f.DurationVar(&cfg.MaxWait, "max-wait", bundleserver.DefaultMaxWait, "cap on the long-polling wait clients ask for")
	f.StringVar(&cfg.Deltas.Mode, "deltas", bundleserver.DeltasAuto, "delta bundles: auto (when unsigned), on (also with signed snapshots) or off")
	f.IntVar(&cfg.Deltas.Retain, "delta-revisions", bundleserver.DefaultDeltaRetain, "revisions retained as delta bases, the served one included")
	f.Int64Var(&cfg.Deltas.MaxBytes, "delta-max-bytes", bundleserver.DefaultDeltaMaxBytes, "bound on the retained data documents' total size")
	f.DurationVar(&debounce, "debounce", store.DefaultDebounce, "gather database changes this long before rebuilding")
	f.DurationVar(&rebuild, "rebuild-interval", store.DefaultRebuild, "rebuild this often even without notifications (negative: never)")
	f.BoolVar(&watch, "watch", false, "with --seed: rebuild when the file changes (checked every second), like opa run --watch")
	return cmd
}

// serveBundles runs the bundle server and, when w is set, the database watcher that triggers rebuilds, until ctx
// ends. SIGHUP triggers a rebuild (re-reading a seed file); with watched set, so does a change of that file.
func serveBundles(ctx context.Context, srv *bundleserver.Server, w *store.Watcher, watched string, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				e.logger.Info("SIGHUP: rebuilding the bundle")
				srv.Trigger()
			}
		}
	})
	if w != nil {
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				e.logger.Error("database watcher stopped", "error", err)
			}
		})
	}
	if watched != "" {
		wg.Go(func() { watchFile(ctx, watched, time.Second, srv.Trigger, e) })
	}
	err := srv.Run(ctx)
	cancel()
	return err
}

// watchFile calls changed whenever the file's size, modification time or identity (a ConfigMap's symlink swap,
// an editor's rename) changes, checking every interval.
func watchFile(ctx context.Context, path string, interval time.Duration, changed func(), e *env) {
	stat := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return "error: " + err.Error()
		}
		id := ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			id = fmt.Sprintf("%d:%d", st.Dev, st.Ino)
		}
		return fmt.Sprintf("%d %d %s", fi.Size(), fi.ModTime().UnixNano(), id)
	}
	last := stat()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := stat(); now != last {
			last = now
			e.logger.Info("seed file changed: rebuilding the bundle", "file", path)
			changed()
		}
	}
}
