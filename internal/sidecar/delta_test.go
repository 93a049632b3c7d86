package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/model"
)

// memSource is a changing in-memory data source for a bundle server.
type memSource struct {
	mu   sync.Mutex
	snap model.Snapshot
}

func (m *memSource) read(context.Context) (model.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return model.Merge(model.Snapshot{}, m.snap), nil
}

func (m *memSource) edit(f func(*model.Snapshot)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.snap)
}

// setFrankRole gives u-frank's org-layer5 organization role (User in the demo) the named role.
func setFrankRole(role string) func(*model.Snapshot) {
	return func(s *model.Snapshot) {
		for i, a := range s.Assignments {
			if a.User == "u-frank" && a.Org == "org-layer5" && a.Team == "" && a.Workspace == "" &&
				(a.Role == "User" || a.Role == "Organization Billing Manager") {
				s.Assignments[i].Role = role
			}
		}
	}
}

// startBundleServer runs keygate's bundle server over src until the test ends.
func startBundleServer(t *testing.T, src *memSource, deltas bundleserver.DeltaConfig) *bundleserver.Server {
	t.Helper()
	srv, err := bundleserver.New(bundleserver.Config{Addr: "127.0.0.1:0", Source: src.read, Deltas: deltas,
		RetryInterval: -1}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runBundleServer(t, srv)
	return srv
}

// serverSent reads keygate_bundle_responses_total and keygate_bundle_response_bytes_total for a kind.
func serverSent(t *testing.T, srv *bundleserver.Server, kind string) (count, bytes float64) {
	t.Helper()
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	read := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^` + name + `\{kind="` + kind + `"\} (\S+)$`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("%s{kind=%q} not in the bundle server's metrics", name, kind)
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return read("keygate_bundle_responses_total"), read("keygate_bundle_response_bytes_total")
}

// allowed asks the sidecar's data API data.keygate.authz.allow.
func allowed(t *testing.T, s *Sidecar, user, org, key string) bool {
	t.Helper()
	in, _ := json.Marshal(map[string]any{"input": map[string]string{"user": user, "org": org, "key": key}})
	resp, err := http.Post("http://"+s.HTTPAddr().String()+"/v1/data/keygate/authz/allow", "application/json", bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Result bool `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/v1/data: %d %v", resp.StatusCode, err)
	}
	return out.Result
}

// TestSidecarAppliesDeltas: keygate authz fed by keygate's bundle server over a changing source. One
// assignment changes: the sidecar gets a delta of a few KiB and answers the new decision. A sidecar left at
// a revision the server no longer retains gets the snapshot.
func TestSidecarAppliesDeltas(t *testing.T) {
	t.Parallel()
	snap, err := catalog.DemoWithRoutes()
	if err != nil {
		t.Fatal(err)
	}
	src := &memSource{snap: snap}
	srv := startBundleServer(t, src, bundleserver.DeltaConfig{Retain: 2})
	s := startSidecar(t, Config{Bundle: BundleConfig{URL: srv.URL()}, Identity: identityFile(newDevIdentity(t))})
	waitFor(t, "the first bundle", func() bool { return s.Revision() == srv.Revision() })
	ctx := context.Background()
	const org, key = "org-layer5", "Manage Subscriptions"
	if allowed(t, s, "u-frank", org, key) {
		t.Fatal("u-frank (User) may manage subscriptions before the change")
	}
	snapshots, _ := serverSent(t, srv, "snapshot")

	t.Log("one assignment changes: a delta")
	src.edit(setFrankRole("Organization Billing Manager"))
	if err := srv.Build(ctx); err != nil {
		t.Fatal(err)
	}
	_ = s.TriggerBundle(ctx)
	waitFor(t, "the new revision", func() bool { return s.Revision() == srv.Revision() })
	if !allowed(t, s, "u-frank", org, key) {
		t.Fatal("u-frank (Organization Billing Manager) may not manage subscriptions after the delta")
	}
	n, size := serverSent(t, srv, "delta")
	if n != 1 || size > 4096 {
		t.Fatalf("deltas sent: %v, %v bytes; want 1 of at most 4 KiB", n, size)
	}
	if again, _ := serverSent(t, srv, "snapshot"); again != snapshots {
		t.Fatalf("snapshots sent %v -> %v for a client at a retained revision", snapshots, again)
	}
	t.Logf("delta for one assignment: %v bytes", size)

	t.Log("two more revisions while the sidecar waits: its revision is no longer retained, a snapshot")
	src.edit(setFrankRole("User"))
	if err := srv.Build(ctx); err != nil {
		t.Fatal(err)
	}
	src.edit(func(s *model.Snapshot) { s.Tokens[0].Revoked = !s.Tokens[0].Revoked })
	if err := srv.Build(ctx); err != nil {
		t.Fatal(err)
	}
	_ = s.TriggerBundle(ctx)
	waitFor(t, "the latest revision", func() bool { return s.Revision() == srv.Revision() })
	if allowed(t, s, "u-frank", org, key) {
		t.Fatal("u-frank (User again) may manage subscriptions after the snapshot")
	}
	if got, _ := serverSent(t, srv, "snapshot"); got != snapshots+1 {
		t.Fatalf("snapshots sent %v -> %v, want one more", snapshots, got)
	}
	if got, _ := serverSent(t, srv, "delta"); got != 1 {
		t.Fatalf("deltas sent: %v, want still 1", got)
	}
}

// TestPersistingSidecarAsksForSnapshots: OPA cannot persist a delta, so a sidecar with a persistence
// directory asks for snapshots (mode=snapshot) and still follows changes.
func TestPersistingSidecarAsksForSnapshots(t *testing.T) {
	t.Parallel()
	snap, err := catalog.DemoWithRoutes()
	if err != nil {
		t.Fatal(err)
	}
	src := &memSource{snap: snap}
	srv := startBundleServer(t, src, bundleserver.DeltaConfig{})
	s := startSidecar(t, Config{Bundle: BundleConfig{URL: srv.URL(), PersistDir: t.TempDir()},
		Identity: identityFile(newDevIdentity(t))})
	waitFor(t, "the first bundle", func() bool { return s.Revision() == srv.Revision() })
	src.edit(setFrankRole("Organization Billing Manager"))
	ctx := context.Background()
	if err := srv.Build(ctx); err != nil {
		t.Fatal(err)
	}
	_ = s.TriggerBundle(ctx)
	waitFor(t, "the new revision", func() bool { return s.Revision() == srv.Revision() })
	if !allowed(t, s, "u-frank", "org-layer5", "Manage Subscriptions") {
		t.Fatal("the change did not reach the persisting sidecar")
	}
	if n, _ := serverSent(t, srv, "delta"); n != 0 {
		t.Fatalf("%v deltas sent to a persisting sidecar", n)
	}
}
