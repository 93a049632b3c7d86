package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/keygate/keygate/internal/revision"
)

// orderedStore is the sidecar's OPA store with one rule added at commit: a transaction that would make the
// bundle's revision older than the committed one (revision.Older: a lower position) is aborted. Every way a
// bundle becomes active (a downloaded snapshot or delta, a persisted bundle) writes its manifest in one
// storage transaction of OPA's bundle plugin, so refusing that commit is refusing the activation: the plugin
// reports it as failed, keeps the active bundle and asks again with the active bundle's ETag.
//
// The check reads the candidate's revision from the transaction itself, after OPA has parsed (and, for a
// signed snapshot, verified) the bundle, so it holds whatever the transport or the server claims.
type orderedStore struct {
	storage.Store
	name    string                         // the bundle whose revisions are ordered
	refused func(candidate, active string) // called for each refused activation

	mu     sync.Mutex // serialises commits' checks with their updates of active
	active string     // the committed revision ("" before the first bundle)
}

func newOrderedStore(s storage.Store, name string, refused func(candidate, active string)) *orderedStore {
	return &orderedStore{Store: s, name: name, refused: refused}
}

// refusedOlder logs and counts a refused activation (keygate_bundle_refused_total{reason="older_revision"}).
func refusedOlder(logger *slog.Logger, m *metrics) func(candidate, active string) {
	return func(candidate, active string) {
		m.refused.WithLabelValues(refusedOlderRevision).Inc()
		logger.Warn("bundle refused: its revision is older than the active one; the active bundle keeps answering",
			"revision", candidate, "active_revision", active)
	}
}

// snapshotsOnly adds "mode=snapshot" to the bundle resource when OPA could not apply a delta bundle, so that a
// keygate bundle server sends snapshots: OPA refuses deltas when it verifies signatures (a delta carries
// none) and when it persists bundles, and would otherwise be sent the same delta again and again.
func snapshotsOnly(b BundleConfig, resource string) string {
	if b.VerificationKey == "" && b.PersistDir == "" {
		return resource
	}
	if strings.Contains(resource, "?") {
		return resource + "&mode=snapshot"
	}
	return resource + "?mode=snapshot"
}

// errOlderRevision is returned by Commit for a refused activation.
type errOlderRevision struct{ candidate, active string }

func (e *errOlderRevision) Error() string {
	return fmt.Sprintf("bundle revision %q is older than the active revision %q: refused", e.candidate, e.active)
}

// Commit commits txn unless it would activate an older revision, in which case txn is aborted.
func (s *orderedStore) Commit(ctx context.Context, txn storage.Transaction) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	candidate, err := bundle.ReadBundleRevisionFromStore(ctx, s.Store, txn, s.name)
	if err != nil { // no manifest for the bundle (a read, or a transaction that is no activation)
		return s.Store.Commit(ctx, txn)
	}
	if candidate != s.active && revision.Older(candidate, s.active) {
		s.Store.Abort(ctx, txn)
		if s.refused != nil {
			s.refused(candidate, s.active)
		}
		return &errOlderRevision{candidate: candidate, active: s.active}
	}
	if err := s.Store.Commit(ctx, txn); err != nil {
		return err
	}
	s.active = candidate
	return nil
}

// The optional interfaces of OPA's stores, passed through.

func (s *orderedStore) MakeDir(ctx context.Context, txn storage.Transaction, path storage.Path) error {
	if md, ok := s.Store.(storage.MakeDirer); ok {
		return md.MakeDir(ctx, txn, path)
	}
	return storage.MakeDir(ctx, s.Store, txn, path)
}

func (s *orderedStore) NonEmpty(ctx context.Context, txn storage.Transaction) func([]string) (bool, error) {
	return storage.NonEmpty(ctx, s.Store, txn)
}

func (s *orderedStore) Close(ctx context.Context) error {
	if c, ok := s.Store.(storage.Closer); ok {
		return c.Close(ctx)
	}
	return nil
}
