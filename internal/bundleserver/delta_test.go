package bundleserver

import (
	"bytes"
	"context"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/keygate/keygate/internal/model"
)

const preferDelta = "modes=snapshot,delta"

// changeFrank turns u-frank's User role in org-layer5 into Organization Billing Manager: one assignment.
func changeFrank(s *model.Snapshot) {
	for i, a := range s.Assignments {
		if a.User == "u-frank" && a.Role == "User" && a.Org == "org-layer5" {
			s.Assignments[i].Role = "Organization Billing Manager"
		}
	}
}

func readBundle(t testing.TB, body []byte) bundle.Bundle {
	t.Helper()
	b, err := bundle.NewReader(bytes.NewReader(body)).WithSkipBundleVerification(true).Read()
	if err != nil {
		t.Fatalf("reading the bundle: %v", err)
	}
	return b
}

// activate activates the bundles in order on one OPA store, as OPA's bundle plugin does, and returns
// data.keygate.db and the active revision. The policies are left out (compiling them is slow and the
// deltas are about data).
func activate(t testing.TB, bodies ...[]byte) (any, string) {
	t.Helper()
	ctx := context.Background()
	store := inmem.New()
	var compiler *ast.Compiler
	for _, body := range bodies {
		b := readBundle(t, body)
		b.Modules = nil
		txn := storage.NewTransactionOrDie(ctx, store, storage.WriteParams)
		c := compiler
		if b.Type() == bundle.SnapshotBundleType || c == nil {
			c = ast.NewCompiler()
		}
		err := bundle.Activate(&bundle.ActivateOpts{Ctx: ctx, Store: store, Txn: txn, Compiler: c,
			Metrics: opametrics.New(), Bundles: map[string]*bundle.Bundle{"keygate": &b}})
		if err != nil {
			store.Abort(ctx, txn)
			t.Fatalf("activating a %s bundle: %v", b.Type(), err)
		}
		if err := store.Commit(ctx, txn); err != nil {
			t.Fatal(err)
		}
		compiler = c
	}
	txn := storage.NewTransactionOrDie(ctx, store)
	defer store.Abort(ctx, txn)
	doc, err := store.Read(ctx, txn, storage.MustParsePath("/keygate/db"))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := bundle.ReadBundleRevisionFromStore(ctx, store, txn, "keygate")
	if err != nil {
		t.Fatal(err)
	}
	return doc, rev
}

func bundleKind(t testing.TB, body []byte) string {
	t.Helper()
	b := readBundle(t, body)
	return b.Type()
}

func TestDeltaBundles(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	s := newServer(t, src, nil)
	ctx := context.Background()
	if err := s.Build(ctx); err != nil {
		t.Fatal(err)
	}
	rev1 := s.Revision()
	srv := httptestServer(t, s)
	_, snap1 := get(t, srv+BundlePath, nil)
	src.set(changeFrank, nil)
	if err := s.Build(ctx); err != nil {
		t.Fatal(err)
	}
	rev2 := s.Revision()
	if rev2 == rev1 {
		t.Fatal("the assignment change did not change the revision")
	}
	_, snap2 := get(t, srv+BundlePath, nil)

	for _, tc := range []struct {
		name    string
		query   string
		headers map[string]string
		code    int
		kind    string
	}{
		{"client at a retained revision: delta", "", map[string]string{"If-None-Match": `"` + rev1 + `"`, "Prefer": preferDelta}, 200, "delta"},
		{"long polling client: delta", "", map[string]string{"If-None-Match": `"` + rev1 + `"`, "Prefer": preferDelta + ";wait=1"}, 200, "delta"},
		{"superseded etags after the active one", "", map[string]string{"If-None-Match": `"` + rev1 + `", "0-ab"`, "Prefer": preferDelta}, 200, "delta"},
		{"unquoted etag", "", map[string]string{"If-None-Match": rev1, "Prefer": preferDelta}, 200, "delta"},
		{"no delta mode in Prefer: snapshot", "", map[string]string{"If-None-Match": `"` + rev1 + `"`}, 200, "snapshot"},
		{"snapshot mode only", "", map[string]string{"If-None-Match": `"` + rev1 + `"`, "Prefer": "modes=snapshot"}, 200, "snapshot"},
		{"mode=snapshot in the query: snapshot", "?mode=snapshot", map[string]string{"If-None-Match": `"` + rev1 + `"`, "Prefer": preferDelta}, 200, "snapshot"},
		{"unknown revision: snapshot", "", map[string]string{"If-None-Match": `"9-0123"`, "Prefer": preferDelta}, 200, "snapshot"},
		{"no If-None-Match: snapshot", "", map[string]string{"Prefer": preferDelta}, 200, "snapshot"},
		{"at the served revision: 304", "", map[string]string{"If-None-Match": `"` + rev2 + `"`, "Prefer": preferDelta}, 304, ""},
		{"served revision listed later: 304", "", map[string]string{"If-None-Match": `"` + rev1 + `", "` + rev2 + `"`, "Prefer": preferDelta}, 304, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, srv+BundlePath+tc.query, tc.headers)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if tc.code != 200 {
				return
			}
			if got := resp.Header.Get("ETag"); got != `"`+rev2+`"` {
				t.Errorf("ETag %s, want %q", got, rev2)
			}
			if got := bundleKind(t, body); got != tc.kind {
				t.Fatalf("a %s bundle, want %s", got, tc.kind)
			}
			if tc.kind == "snapshot" {
				if !bytes.Equal(body, snap2) {
					t.Error("the snapshot is not the served bundle")
				}
				return
			}
			if len(body) >= len(snap2) || len(body) > 4096 {
				t.Errorf("delta of one assignment: %d bytes (snapshot %d)", len(body), len(snap2))
			}
			got, gotRev := activate(t, snap1, body)
			want, _ := activate(t, snap2)
			if gotRev != rev2 {
				t.Errorf("revision after the delta %q, want %q", gotRev, rev2)
			}
			if !reflect.DeepEqual(got, want) {
				t.Error("snapshot 1 + delta is not snapshot 2's data")
			}
		})
	}
	if v := value(t, s.metrics.sentCount.WithLabelValues("delta")); v != 4 {
		t.Errorf("keygate_bundle_responses_total{kind=delta} = %v, want 4", v)
	}
	if v := value(t, s.metrics.sentBytes.WithLabelValues("delta")); v <= 0 {
		t.Errorf("keygate_bundle_response_bytes_total{kind=delta} = %v", v)
	}
}

// TestDeltaRetention: only the last Retain revisions, within MaxBytes, are delta bases.
func TestDeltaRetention(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   DeltaConfig
		kinds []string // the answer to a client at revision 1, 2, 3 when 4 is served
	}{
		{"retain 3", DeltaConfig{Retain: 3}, []string{"snapshot", "delta", "delta"}},
		{"retain 1: no deltas", DeltaConfig{Retain: 1}, []string{"snapshot", "snapshot", "snapshot"}},
		{"max bytes: only the served one", DeltaConfig{MaxBytes: 1}, []string{"snapshot", "snapshot", "snapshot"}},
		{"off", DeltaConfig{Mode: DeltasOff}, []string{"snapshot", "snapshot", "snapshot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := newSource(t)
			s := newServer(t, src, func(c *Config) { c.Deltas = tc.cfg })
			var revs []string
			for i := range 4 {
				src.set(func(snap *model.Snapshot) { snap.Tokens[0].Revoked = i%2 == 1; snap.Tokens[1].Revoked = i >= 2 }, nil)
				if err := s.Build(context.Background()); err != nil {
					t.Fatal(err)
				}
				revs = append(revs, s.Revision())
			}
			srv := httptestServer(t, s)
			for i, want := range tc.kinds {
				resp, body := get(t, srv+BundlePath, map[string]string{"If-None-Match": `"` + revs[i] + `"`, "Prefer": preferDelta})
				if resp.StatusCode != 200 {
					t.Fatalf("revision %d: status %d", i+1, resp.StatusCode)
				}
				if got := bundleKind(t, body); got != want {
					t.Errorf("client at revision %d: %s, want %s", i+1, got, want)
				}
			}
			n, size := 0, int64(0)
			if s.history != nil {
				n, size = s.history.stats()
			}
			if max := tc.cfg.Retain; max > 0 && n > max {
				t.Errorf("%d revisions retained, want at most %d", n, max)
			}
			if tc.cfg.MaxBytes == 1 && n != 1 {
				t.Errorf("%d revisions (%d bytes) retained with max_bytes 1, want the served one", n, size)
			}
		})
	}
}

// TestSignedBundlesHaveNoDeltasByDefault: OPA cannot verify a delta, so a signing server sends snapshots
// unless deltas.mode is "on".
func TestSignedBundlesHaveNoDeltasByDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode, want string
	}{{"", "snapshot"}, {DeltasAuto, "snapshot"}, {DeltasOn, "delta"}} {
		t.Run("mode "+tc.mode, func(t *testing.T) {
			t.Parallel()
			src := newSource(t)
			s := newServer(t, src, func(c *Config) {
				c.Build.SigningKey = []byte("a shared secret for the test")
				c.Deltas.Mode = tc.mode
			})
			if err := s.Build(context.Background()); err != nil {
				t.Fatal(err)
			}
			rev1 := s.Revision()
			src.set(changeFrank, nil)
			if err := s.Build(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, body := get(t, httptestServer(t, s)+BundlePath, map[string]string{"If-None-Match": `"` + rev1 + `"`, "Prefer": preferDelta})
			if got := bundleKind(t, body); got != tc.want {
				t.Errorf("%s, want %s", got, tc.want)
			}
		})
	}
}

// TestReplicasServeIdenticalDeltas: two servers over the same source give the same revisions and the same
// bytes, snapshots and deltas.
func TestReplicasServeIdenticalDeltas(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	a, b := newServer(t, src, nil), newServer(t, src, nil)
	ctx := context.Background()
	build := func() {
		for _, s := range []*Server{a, b} {
			if err := s.Build(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	build()
	rev1 := a.Revision()
	src.set(changeFrank, nil)
	build()
	if a.Revision() != b.Revision() || a.Revision() == rev1 {
		t.Fatalf("revisions %q and %q (first %q)", a.Revision(), b.Revision(), rev1)
	}
	ua, ub := httptestServer(t, a)+BundlePath, httptestServer(t, b)+BundlePath
	_, sa := get(t, ua, nil)
	_, sb := get(t, ub, nil)
	if !bytes.Equal(sa, sb) {
		t.Error("the replicas' snapshots differ")
	}
	h := map[string]string{"If-None-Match": `"` + rev1 + `"`, "Prefer": preferDelta}
	_, da := get(t, ua, h)
	_, db := get(t, ub, h)
	if bundleKind(t, da) != "delta" || !bytes.Equal(da, db) {
		t.Errorf("the replicas' deltas differ (%d and %d bytes)", len(da), len(db))
	}
	// A client that got its bundle from one replica gets the delta from the other.
	got, _ := activate(t, sa, db)
	want, _ := activate(t, sb)
	if !reflect.DeepEqual(got, want) {
		t.Error("replica A's snapshot + replica B's delta is not the served data")
	}
}

func TestDeltaConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    DeltaConfig
		want string
	}{
		{DeltaConfig{Mode: "sometimes"}, "deltas.mode"},
		{DeltaConfig{Retain: -1}, "deltas.retain"},
		{DeltaConfig{MaxBytes: -1}, "deltas.max_bytes"},
	} {
		cfg := Config{Addr: "127.0.0.1:0", Source: newSource(t).read, Deltas: tc.d}
		cfg.SetDefaults()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %s", tc.d, err, tc.want)
		}
	}
}

// httptestServer serves s's handler (without Run: the test builds) and returns its base URL.
func httptestServer(t testing.TB, s *Server) string {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}
