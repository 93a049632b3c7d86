package sidecar

import (
	"bytes"
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/revision"
)

// atPosition rebuilds a compiled bundle with the revision "POSITION-HASH" (signed again with key when set):
// what a bundle server reading a database at that position serves.
func atPosition(t testing.TB, b *compiler.Bundle, position string, key []byte) (data []byte, rev string) {
	t.Helper()
	out, err := bundle.NewReader(bytes.NewReader(b.Data)).WithSkipBundleVerification(true).Read()
	if err != nil {
		t.Fatal(err)
	}
	rev = position + "-" + contentHash(t, b.Revision)
	out.Manifest.Revision = rev
	out.Signatures = bundle.SignaturesConfig{}
	if key != nil {
		if err := out.GenerateSignature(bundle.NewSigningConfig(string(key), "RS256", ""), "keygate", false); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(out); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), rev
}

func contentHash(t testing.TB, rev string) string {
	t.Helper()
	r, err := revision.Parse(rev)
	if err != nil {
		t.Fatal(err)
	}
	return r.Hash
}

// deltaAt is a delta bundle from the data of from to the data of to, with the revision "POSITION-HASH".
func deltaAt(t testing.TB, from, to *compiler.Bundle, position string) (data []byte, rev string) {
	t.Helper()
	ops, err := compiler.Diff(from.Doc, to.Doc)
	if err != nil {
		t.Fatal(err)
	}
	rev = position + "-" + contentHash(t, to.Revision)
	data, err = compiler.DeltaBundle(rev, ops, to.Doc)
	if err != nil {
		t.Fatal(err)
	}
	return data, rev
}

// TestOlderRevisionIsRefused: a bundle server that serves revision 5 and then revision 3 (a rollback
// attacker replaying an old signed bundle, or a stale replica) leaves the sidecar on 5, counted in
// keygate_bundle_refused_total{reason="older_revision"}; revision 6 is then activated.
func TestOlderRevisionIsRefused(t *testing.T) {
	t.Parallel()
	keys := newSigningPair(t)
	deleted := build(t, demoModel(t, nil), nil)             // u-trent deleted
	live := build(t, demoModel(t, undeleteTrent), nil)      // u-trent live
	b5, rev5 := atPosition(t, deleted, "5", keys.private)   // the active one
	b3, rev3 := atPosition(t, live, "3", keys.private)      // older, validly signed
	b6, rev6 := atPosition(t, live, "6", keys.private)      // newer
	bare, revBare := atPosition(t, live, "0", keys.private) // a source without positions
	srv := newBundleServer(t, b5, rev5)
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{URL: srv.URL + "/bundles/keygate.tar.gz",
		VerificationKey: keys.pubFile}, Identity: identityFile(dev)})
	waitFor(t, "revision 5", func() bool { return s.Revision() == rev5 })
	f := checkFixture{s: s, c: authv3.NewAuthorizationClient(dial(t, s)), dev: dev}
	ctx := context.Background()

	for _, older := range []struct {
		data []byte
		rev  string
	}{{b3, rev3}, {bare, revBare}} {
		srv.set(older.data, older.rev)
		before := counterValue(t, s, "keygate_bundle_refused_total", "older_revision")
		_ = s.TriggerBundle(ctx)
		if s.Revision() != rev5 || trentCheck(t, f) != "user_deleted" {
			t.Fatalf("revision %q activated over %q", s.Revision(), rev5)
		}
		if got := counterValue(t, s, "keygate_bundle_refused_total", "older_revision"); got != before+1 {
			t.Fatalf("keygate_bundle_refused_total{reason=older_revision} %v -> %v, want +1", before, got)
		}
	}

	srv.set(b6, rev6)
	_ = s.TriggerBundle(ctx)
	waitFor(t, "revision 6", func() bool { return s.Revision() == rev6 })
	if got := trentCheck(t, f); got != "allow" {
		t.Fatalf("trent after revision 6: %s, want allow", got)
	}
}

// TestOlderDeltaIsRefused: the same for delta bundles (unsigned sidecar: OPA applies deltas only then).
func TestOlderDeltaIsRefused(t *testing.T) {
	t.Parallel()
	deleted := build(t, demoModel(t, nil), nil)
	live := build(t, demoModel(t, undeleteTrent), nil)
	b5, rev5 := atPosition(t, deleted, "5", nil)
	d4, rev4 := deltaAt(t, deleted, live, "4")
	d6, rev6 := deltaAt(t, deleted, live, "6")
	srv := newBundleServer(t, b5, rev5)
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{URL: srv.URL + "/bundles/keygate.tar.gz"}, Identity: identityFile(dev)})
	waitFor(t, "revision 5", func() bool { return s.Revision() == rev5 })
	f := checkFixture{s: s, c: authv3.NewAuthorizationClient(dial(t, s)), dev: dev}
	ctx := context.Background()

	srv.set(d4, rev4)
	_ = s.TriggerBundle(ctx)
	if s.Revision() != rev5 || trentCheck(t, f) != "user_deleted" {
		t.Fatalf("older delta %q applied over %q", s.Revision(), rev5)
	}
	if got := counterValue(t, s, "keygate_bundle_refused_total", "older_revision"); got != 1 {
		t.Fatalf("keygate_bundle_refused_total{reason=older_revision} = %v, want 1", got)
	}

	srv.set(d6, rev6)
	_ = s.TriggerBundle(ctx)
	waitFor(t, "revision 6", func() bool { return s.Revision() == rev6 })
	if got := trentCheck(t, f); got != "allow" {
		t.Fatalf("trent after the delta to revision 6: %s, want allow", got)
	}
}

// TestSnapshotsOnly: a sidecar that verifies signatures or persists bundles (OPA refuses deltas then) asks a
// keygate bundle server for snapshots; others leave the resource alone and may get deltas.
func TestSnapshotsOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		b        BundleConfig
		resource string
		want     string
	}{
		{BundleConfig{}, "/bundles/keygate.tar.gz", "/bundles/keygate.tar.gz"},
		{BundleConfig{VerificationKey: "k.pem"}, "/bundles/keygate.tar.gz", "/bundles/keygate.tar.gz?mode=snapshot"},
		{BundleConfig{PersistDir: "/var/lib/keygate"}, "/b.tar.gz?x=1", "/b.tar.gz?x=1&mode=snapshot"},
	} {
		if got := snapshotsOnly(tc.b, tc.resource); got != tc.want {
			t.Errorf("snapshotsOnly(%+v, %q) = %q, want %q", tc.b, tc.resource, got, tc.want)
		}
	}
}
