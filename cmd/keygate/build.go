package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
)

func init() { register(newBuildCmd) }

func newBuildCmd(e *env) *cobra.Command {
	var (
		src                    sourceFlags
		out, keyFile, alg, kid string
	)
	cmd := &cobra.Command{
		Use:   "build (--seed FILE | --database-url URL) -o bundle.tar.gz [--signing-key PEM]",
		Short: "Compile RBAC data into an OPA bundle (policies + data, .manifest, optional signature)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErr("-o/--output is required")
			}
			opts := compiler.Options{SigningAlg: alg, KeyID: kid}
			if keyFile != "" {
				k, err := os.ReadFile(keyFile)
				if err != nil {
					return usageErr("--signing-key: %v", err)
				}
				opts.SigningKey = k
			}
			if err := opts.Validate(); err != nil {
				return usageErr("%v", err)
			}
			snap, err := src.snapshot(cmd.Context())
			if err != nil {
				return err
			}
			m, err := catalog.Resolve(snap)
			if err != nil {
				return fmt.Errorf("%s: %w", src.describe(), err)
			}
			// The revision names the database's commit position the snapshot was read at (0 for a seed file),
			// as keygate serve's do.
			opts.Position = snap.Position
			b, err := compiler.Build(m, opts)
			if err != nil {
				return err
			}
			if err := compiler.WriteFile(out, b.Data); err != nil {
				return err
			}
			signed := "unsigned"
			if b.Signed {
				signed = "signed " + opts.SigningAlg + " key id " + opts.KeyID
			}
			fmt.Fprintf(e.stdout, "wrote %s: revision %s, %d bytes, %s (%d keys, %d roles, %d users, %d assignments)\n",
				out, b.Revision, len(b.Data), signed, len(m.Keys), len(m.Roles), len(m.Users), len(m.Assignments))
			return nil
		},
	}
	src.register(cmd, e)
	cmd.Flags().StringVarP(&out, "output", "o", "", "bundle file to write (.tar.gz); written atomically")
	cmd.Flags().StringVar(&keyFile, "signing-key", "", "sign with this private key (PEM, RSA or EC) or HMAC secret file")
	cmd.Flags().StringVar(&alg, "signing-alg", "", "signature algorithm (default RS256 / ES256 / HS256 by key type)")
	cmd.Flags().StringVar(&kid, "key-id", "keygate", "key id recorded in the signature")
	return cmd
}
