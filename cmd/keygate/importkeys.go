package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/importer"
	"github.com/keygate/keygate/internal/seed"
)

func init() { register(newImportKeysCmd) }

func newImportKeysCmd(e *env) *cobra.Command {
	var (
		files      importer.Files
		out, dbURL string
	)
	cmd := &cobra.Command{
		Use:   "import-keys [DIR] [--keys CSV] [--grants CSV] [--keychains CSV] (-o seed.yaml | --database-url URL)",
		Short: "Import the public Layer5 permissions catalogue (CSV) into a seed file or the database",
		Long: `Reads the Layer5 catalogue's CSV format: keys (id,name,category,...), the role x key grant matrix
(role,key_id,...,grant with allow / allow_if_owner) and keychain membership (keychain,key_id,...). DIR picks the
standard file names in a folder (layer5-default-keys.csv, layer5-default-role-grants.csv,
layer5-default-keychain-keys.csv). The result is validated against the built-in catalogue before anything is
written.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				d := importer.InDir(args[0])
				if files.Keys == "" {
					files.Keys = d.Keys
				}
				if files.Grants == "" {
					files.Grants = d.Grants
				}
				if files.Keychains == "" {
					files.Keychains = d.Keychains
				}
			}
			if files.Keys == "" {
				return usageErr("no keys CSV: give DIR or --keys")
			}
			if out == "" && dbURL == "" && e.getenv != nil {
				dbURL = e.getenv("KEYGATE_DATABASE_URL")
			}
			if (out == "") == (dbURL == "") {
				return usageErr("give exactly one of -o/--output and --database-url (or $KEYGATE_DATABASE_URL)")
			}
			snap, st, err := importer.Import(files)
			if err != nil {
				return err
			}
			if _, err := catalog.Resolve(snap); err != nil {
				return fmt.Errorf("imported catalogue does not validate: %w", err)
			}
			if dbURL != "" {
				if err := importKeysToDatabase(cmd.Context(), dbURL, snap); err != nil {
					return err
				}
			} else {
				y, err := seed.Marshal(snap)
				if err != nil {
					return err
				}
				if err := compiler.WriteFile(out, y); err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stdout, "imported %d keys, %d grants (%d owner-only), %d keychains\n", st.Keys, st.Grants, st.OwnerOnly, st.Keychains)
			return nil
		},
	}
	cmd.Flags().StringVar(&files.Keys, "keys", "", "keys CSV")
	cmd.Flags().StringVar(&files.Grants, "grants", "", "role x key grants CSV")
	cmd.Flags().StringVar(&files.Keychains, "keychains", "", "keychain membership CSV")
	cmd.Flags().StringVarP(&out, "output", "o", "", "seed file to write (YAML)")
	cmd.Flags().StringVar(&dbURL, "database-url", "", "write the catalogue into this PostgreSQL database (default $KEYGATE_DATABASE_URL unless -o is given)")
	return cmd
}
