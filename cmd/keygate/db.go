package main

import (
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/store"
)

func init() {
	register(newMigrateCmd)
	register(newDBCmd)
}

// databaseURLFlag registers --database-url with its $KEYGATE_DATABASE_URL default.
func databaseURLFlag(cmd *cobra.Command, e *env, url *string) {
	cmd.Flags().StringVar(url, "database-url", e.getenv("KEYGATE_DATABASE_URL"), "PostgreSQL URL (default $KEYGATE_DATABASE_URL)")
}

// checkDatabaseURL refuses a missing or unparsable URL as bad usage.
func checkDatabaseURL(url string) error {
	if url == "" {
		return usageErr("--database-url (or $KEYGATE_DATABASE_URL) is required")
	}
	if _, err := pgx.ParseConfig(url); err != nil {
		return usageErr("--database-url: %v", err)
	}
	return nil
}

func newMigrateCmd(e *env) *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "migrate --database-url URL",
		Short: "Create or update keygate's PostgreSQL schema (idempotent)",
		Long: `Apply keygate's schema migrations to the database, in the first schema of the connection's search_path
(set it with the URL, e.g. ?search_path=keygate or options=-csearch_path%3Dkeygate). Safe to run concurrently.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDatabaseURL(url); err != nil {
				return err
			}
			pool, err := store.Open(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			applied, err := store.MigrateApplied(cmd.Context(), pool)
			if err != nil {
				return err
			}
			for _, m := range applied {
				if _, err := fmt.Fprintf(e.stdout, "applied %s\n", m); err != nil {
					return err
				}
			}
			if len(applied) == 0 {
				_, err = fmt.Fprintln(e.stdout, "schema up to date: no migration to apply")
			} else {
				_, err = fmt.Fprintf(e.stdout, "schema up to date: %d migration(s) applied\n", len(applied))
			}
			return err
		},
	}
	databaseURLFlag(cmd, e, &url)
	return cmd
}

func newDBCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Manage the access model held in PostgreSQL",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newDBLoadCmd(e))
	return cmd
}

func newDBLoadCmd(e *env) *cobra.Command {
	var url, seedFile string
	cmd := &cobra.Command{
		Use:   "load [--seed FILE] --database-url URL",
		Short: "Replace the access model in the database with a seed file (default: the embedded demo and routes)",
		Long: `Validate a seed file against the built-in catalogue (and the keys imported into the database) and write it
into the database in one transaction, replacing the data there: all of it or nothing. Without --seed, the embedded
demo dataset with the identity API route table (what keygate dev serves) is loaded. Run keygate migrate first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDatabaseURL(url); err != nil {
				return err
			}
			var (
				data model.Snapshot
				err  error
				what = "embedded demo"
			)
			if seedFile != "" {
				what = "seed " + seedFile
				data, err = readSeed(seedFile, func(msg string) { e.logger.Warn(msg) })
			} else {
				data, err = catalog.DemoWithRoutes()
			}
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			pool, err := store.Open(ctx, url)
			if err != nil {
				return err
			}
			defer pool.Close()
			if err := store.Load(ctx, pool, catalog.Builtin(), data); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			_, err = fmt.Fprintf(e.stdout, "loaded %s: %d users, %d organizations, %d roles, %d assignments, %d tokens, %d routes\n",
				what, len(data.Users), len(data.Organizations), len(data.Roles), len(data.Assignments), len(data.Tokens), len(data.Routes))
			return err
		},
	}
	databaseURLFlag(cmd, e, &url)
	cmd.Flags().StringVar(&seedFile, "seed", "", "seed file (YAML or JSON); default: the embedded demo with the identity API routes")
	return cmd
}
