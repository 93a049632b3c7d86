package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/identity"
)

func init() { register(newTokenCmd) }

func newTokenCmd(e *env) *cobra.Command {
	var (
		spec    identity.TokenSpec
		keyFile string
	)
	cmd := &cobra.Command{
		Use:   "token --user ID --key FILE [--ttl 1h] [--jti ID]",
		Short: "Mint a demo RS256 JWT signed with a dev key (the one `keygate dev` generates)",
		Long: `Print a signed bearer token for a user. The key is a PEM RSA private key; ` + "`keygate dev`" + ` writes a fresh
one (and its public JWKS, which the sidecar verifies with) into a temporary directory at start. Development only.`,
		Example: `  curl -H "Authorization: Bearer $(keygate token --user u-alice --jti tok-alice --key $DIR/dev-signing-key.pem)" ...`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if spec.User == "" {
				return usageErr("--user is required")
			}
			if keyFile == "" {
				return usageErr("--key is required (keygate dev prints where its dev key is)")
			}
			if spec.TTL < 0 {
				return usageErr("--ttl: %s is negative", spec.TTL)
			}
			key, err := identity.LoadSigningKey(keyFile)
			if err != nil {
				return usageErr("--key: %v", err)
			}
			tok, err := identity.Mint(key, spec)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, tok)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.User, "user", "", "subject (user id)")
	f.StringVar(&spec.ID, "jti", "", "token id (jti), checked against the bundle's tokens")
	f.DurationVar(&spec.TTL, "ttl", time.Hour, "lifetime (0 = no exp)")
	f.StringVar(&spec.Issuer, "issuer", "", "iss claim")
	f.StringSliceVar(&spec.Audience, "audience", nil, "aud claim (repeatable)")
	f.StringVar(&keyFile, "key", "", "PEM RSA private key file")
	return cmd
}
