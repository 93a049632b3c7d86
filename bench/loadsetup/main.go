// Command loadsetup prepares a load run (bench/ghz.sh): a bundle of N synthetic users (internal/synth), a dev
// JWT key with its JWKS, and a ghz request file whose Check is allowed for a synthetic user. Benchmark tooling
// only: the key is a throwaway generated into the output folder.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/synth"
)

func main() {
	users := flag.Int("users", 100000, "synthetic users")
	dir := flag.String("dir", "bench/out", "output folder")
	flag.Parse()
	if err := run(*users, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "loadsetup:", err)
		os.Exit(1)
	}
}

func run(users int, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	snap := synth.Generate(synth.Config{Users: users})
	routes, err := catalog.IdentityRoutes()
	if err != nil {
		return err
	}
	m, err := catalog.Resolve(model.Merge(snap, routes))
	if err != nil {
		return err
	}
	b, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		return err
	}
	if err := compiler.WriteFile(filepath.Join(dir, "bundle.tar.gz"), b.Data); err != nil {
		return err
	}
	keyPath, jwksPath, err := identity.GenerateDevKey(dir)
	if err != nil {
		return err
	}
	key, err := identity.LoadSigningKey(keyPath)
	if err != nil {
		return err
	}
	// User 12345 (or the last one) holds the User role in its home org, which lists that org's teams.
	u := min(12345, users-1)
	user, org := synth.UserID(u), synth.OrgID(u%max(users/1000, 2))
	tok, err := identity.Mint(key, identity.TokenSpec{User: user, TTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	req := map[string]any{"attributes": map[string]any{
		"request": map[string]any{"http": map[string]any{
			"method": "GET", "path": "/api/identity/orgs/" + org + "/teams", "host": "api.local", "scheme": "http",
			"headers": map[string]string{"authorization": "Bearer " + tok, "accept": "application/json",
				"user-agent": "ghz", "x-request-id": "load"},
		}},
		"contextExtensions": map[string]string{"service": "identity"},
	}}
	raw, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "request.json"), raw, 0o644); err != nil {
		return err
	}
	fmt.Printf("bundle %s (revision %s, %d bytes), jwks %s, request %s\n",
		filepath.Join(dir, "bundle.tar.gz"), b.Revision, len(b.Data), jwksPath, filepath.Join(dir, "request.json"))
	return nil
}
