package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/seed"
)

// sourceFlags selects where the data comes from: a seed file, PostgreSQL, or the embedded demo.
type sourceFlags struct {
	seed        string
	databaseURL string
	getenv      func(string) string
	warn        func(string)
}

func (s *sourceFlags) register(cmd *cobra.Command, e *env) {
	s.getenv = e.getenv
	s.warn = func(msg string) { e.logger.Warn(msg) }
	cmd.Flags().StringVar(&s.seed, "seed", "", "seed file (YAML or JSON); default: the embedded demo unless a database URL is given")
	cmd.Flags().StringVar(&s.databaseURL, "database-url", "", "PostgreSQL URL (default $KEYGATE_DATABASE_URL unless --seed is given)")
}

// describe names the source for messages.
func (s *sourceFlags) describe() string {
	switch {
	case s.seed != "":
		return "seed " + s.seed
	case s.databaseURL != "":
		return "database"
	}
	return "embedded demo"
}

// resolve applies $KEYGATE_DATABASE_URL when no source flag is given and refuses both flags at once.
func (s *sourceFlags) resolve() error {
	if s.seed == "" && s.databaseURL == "" && s.getenv != nil {
		s.databaseURL = s.getenv("KEYGATE_DATABASE_URL")
	}
	if s.seed != "" && s.databaseURL != "" {
		return usageErr("give --seed or --database-url, not both")
	}
	return nil
}

// snapshot reads the data snapshot from the chosen source (without the built-in catalogue).
func (s *sourceFlags) snapshot(ctx context.Context) (model.Snapshot, error) {
	if err := s.resolve(); err != nil {
		return model.Snapshot{}, err
	}
	switch {
	case s.seed != "":
		return readSeed(s.seed, s.warn)
	case s.databaseURL != "":
		return databaseSnapshot(ctx, s.databaseURL)
	}
	return catalog.DemoWithRoutes()
}

// model reads and validates the data.
func (s *sourceFlags) model(ctx context.Context) (*model.Model, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	m, err := catalog.Resolve(snap)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.describe(), err)
	}
	return m, nil
}

// readSeed reads a seed file; one without routes gets the built-in identity API route table
// (bundles/routes/identity.yaml), so `keygate serve --seed bundles/demo.yaml` answers Envoy like keygate dev.
// A seed that lists routes keeps only its own. When the seed's keys make a key name of the table ambiguous (the
// full public catalogue has two keys named "Create Team"), the table is left out and warn says why
// (docs/decisions.md).
func readSeed(path string, warn func(string)) (model.Snapshot, error) {
	snap, err := seed.ReadFile(path)
	if err != nil || len(snap.Routes) > 0 {
		return snap, err
	}
	routes, err := catalog.IdentityRoutes()
	if err != nil {
		return model.Snapshot{}, err
	}
	if ambiguous := ambiguousRouteKeys(snap, routes.Routes); len(ambiguous) > 0 {
		if warn != nil {
			warn(fmt.Sprintf("seed %s has no routes, and the built-in identity API routes cannot be added: its keys make %s ambiguous; serving it without routes",
				path, strings.Join(ambiguous, ", ")))
		}
		return snap, nil
	}
	snap.Routes = routes.Routes
	return snap, nil
}

// ambiguousRouteKeys returns the key names of routes that name more than one key of the built-in catalogue and
// the seed (by name or alias).
func ambiguousRouteKeys(snap model.Snapshot, routes []model.Route) []string {
	ids := map[string]bool{}
	names := map[string]map[string]bool{}
	for _, k := range append(catalog.Builtin().Keys, snap.Keys...) {
		ids[k.ID] = true
		for _, n := range append([]string{k.Name}, k.Aliases...) {
			if names[n] == nil {
				names[n] = map[string]bool{}
			}
			names[n][k.ID] = true
		}
	}
	var out []string
	for _, r := range routes {
		if !ids[r.Key] && len(names[r.Key]) > 1 && !slices.Contains(out, r.Key) {
			out = append(out, r.Key)
		}
	}
	return out
}
