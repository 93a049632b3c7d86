// Package bundles holds keygate's data inputs: the built-in catalogue (system keys, keychains, default roles)
// and the demo dataset that `keygate dev` and `make run` use. Build output goes to bundles/dist/ (git-ignored).
package bundles

import _ "embed"

// Catalog is the built-in catalogue as a seed file (YAML).
//
//go:embed catalog.yaml
var Catalog []byte

// Demo is the demo dataset as a seed file (YAML): several orgs, teams, workspaces, users in every default
// role, a cross-org workspace grant, tokens and the Layer5 Cloud identity API route table.
//
//go:embed demo.yaml
var Demo []byte

// IdentityRoutes is the Layer5 Cloud identity API route table as a seed file (YAML).
//
//go:embed routes/identity.yaml
var IdentityRoutes []byte
