// Package catalog provides keygate's built-in catalogue (system keys, keychains and default roles, from
// bundles/catalog.yaml) and the demo dataset.
package catalog

import (
	"fmt"
	"sync"

	"github.com/keygate/keygate/bundles"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/seed"
)

var builtin = sync.OnceValues(func() (model.Snapshot, error) {
	return seed.Parse("bundles/catalog.yaml", bundles.Catalog)
})

// Builtin returns the built-in catalogue. It panics only if the embedded file is broken, which a test
// prevents.
func Builtin() model.Snapshot {
	s, err := builtin()
	if err != nil {
		panic(fmt.Sprintf("built-in catalogue: %v", err))
	}
	return model.Merge(model.Snapshot{}, s) // a copy: callers may not alter the shared one
}

// Demo returns the demo dataset (bundles/demo.yaml).
func Demo() (model.Snapshot, error) {
	return seed.Parse("bundles/demo.yaml", bundles.Demo)
}

// Resolve validates data against the built-in catalogue.
func Resolve(data model.Snapshot) (*model.Model, error) {
	return model.Resolve(Builtin(), data)
}

// IdentityRoutes returns the Layer5 Cloud identity API route table (bundles/routes/identity.yaml).
func IdentityRoutes() (model.Snapshot, error) {
	return seed.Parse("bundles/routes/identity.yaml", bundles.IdentityRoutes)
}

// DemoWithRoutes returns the demo dataset with the identity API route table: what `keygate dev` serves.
func DemoWithRoutes() (model.Snapshot, error) {
	demo, err := Demo()
	if err != nil {
		return demo, err
	}
	routes, err := IdentityRoutes()
	if err != nil {
		return demo, err
	}
	return model.Merge(demo, routes), nil
}

// DemoModel is the demo dataset with the identity API route table, validated against the built-in catalogue.
func DemoModel() (*model.Model, error) {
	demo, err := DemoWithRoutes()
	if err != nil {
		return nil, err
	}
	return Resolve(demo)
}
