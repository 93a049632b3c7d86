package main

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/seed"
	"github.com/keygate/keygate/internal/store"
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
	)
	cmd := &cobra.Command{
		Use:   "serve (--seed FILE | --database-url URL) [--signing-key PEM] [--addr HOST:PORT]",
		Short: "Run the bundle server: build the (signed) OPA bundle and serve it to the sidecars",
		Long: `Serve the OPA bundle at GET /bundles/keygate.tar.gz (ETag = the content-hash revision, If-None-Match -> 304,
OPA long polling with "Prefer: wait=N"), /health (200 once a bundle is built) and /metrics.

With --database-url the bundle is rebuilt when the database changes (LISTEN/NOTIFY, debounced) and every
--rebuild-interval as a safety net; a failed build (database down, invalid data) keeps the last good bundle
served. With --seed the file is read at start.

A client at a revision the server retains (--delta-revisions, --delta-max-bytes) gets a delta bundle (OPA's
patch.json format) instead of the snapshot: by default only when the bundles are unsigned, since OPA cannot
verify a delta (--deltas on sends them with signed snapshots too; verifying clients must then set
allow_unsigned_delta_bundles and reach the server over an authenticated channel). A client adding
?mode=snapshot to the bundle URL always gets the snapshot.`,
		Example: `  keygate serve --database-url postgres://keygate@db/keygate --signing-key signing-key.pem --addr 0.0.0.0:8282`,
		Args:    cobra.NoArgs,
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
			var wcfg store.Config
			if src.seed != "" {
				cfg.Source = func(context.Context) (model.Snapshot, error) { return seed.ReadFile(src.seed) }
			} else {
				if err := checkDatabaseURL(src.databaseURL); err != nil {
					return err
				}
				wcfg = store.Config{DatabaseURL: src.databaseURL, Debounce: debounce, Rebuild: rebuild, Logger: e.logger}
				if err := wcfg.Validate(); err != nil {
					return usageErr("%v", err)
				}
				// A lazily connecting pool: the server starts (and says why it is not ready) while the database
				// is down.
				pool, err := pgxpool.New(ctx, src.databaseURL)
				if err != nil {
					return usageErr("--database-url: %v", err)
				}
				defer pool.Close()
				cfg.Source = func(ctx context.Context) (model.Snapshot, error) { return store.Snapshot(ctx, pool) }
			}
			srv, err := bundleserver.New(cfg, e.logger)
			if err != nil {
				return usageErr("%v", err)
			}
			return serveBundles(ctx, srv, wcfg, e)
		},
	}
	src.register(cmd, e)
	cmd.Flags().Lookup("seed").Usage = "seed file (YAML or JSON), read at start; serve needs it or a database URL"
	sign.register(cmd)
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", bundleserver.DefaultAddr, "HTTP listener host:port")
	f.DurationVar(&cfg.MaxWait, "max-wait", bundleserver.DefaultMaxWait, "cap on the long-polling wait clients ask for")
	f.StringVar(&cfg.Deltas.Mode, "deltas", bundleserver.DeltasAuto, "delta bundles: auto (when unsigned), on (also with signed snapshots) or off")
	f.IntVar(&cfg.Deltas.Retain, "delta-revisions", bundleserver.DefaultDeltaRetain, "revisions retained as delta bases, the served one included")
	f.Int64Var(&cfg.Deltas.MaxBytes, "delta-max-bytes", bundleserver.DefaultDeltaMaxBytes, "bound on the retained data documents' total size")
	f.DurationVar(&debounce, "debounce", store.DefaultDebounce, "gather database changes this long before rebuilding")
	f.DurationVar(&rebuild, "rebuild-interval", store.DefaultRebuild, "rebuild this often even without notifications (negative: never)")
	return cmd
}

// serveBundles runs the bundle server and, when wcfg names a database, a watcher that triggers rebuilds,
// until ctx ends.
func serveBundles(ctx context.Context, srv *bundleserver.Server, wcfg store.Config, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if wcfg.DatabaseURL != "" {
		w, err := store.NewWatcher(wcfg, srv.Trigger)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				e.logger.Error("database watcher stopped", "error", err)
			}
		})
	}
	err := srv.Run(ctx)
	cancel()
	return err
}
