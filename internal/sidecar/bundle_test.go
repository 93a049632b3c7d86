package sidecar

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/internal/model"
)

// tamper rewrites the bundle's data document (un-deleting u-trent) and keeps the old signatures.
func tamper(t *testing.T, data []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	changed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if strings.HasSuffix(h.Name, "data.json") {
			var doc map[string]any
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			db := doc
			if k, ok := doc["keygate"].(map[string]any); ok {
				db = k["db"].(map[string]any)
			}
			delete(db["deleted"].(map[string]any), "u-trent")
			body, _ = json.Marshal(doc)
			changed = true
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(body)
	}
	_ = tw.Close()
	_ = zw.Close()
	if !changed {
		t.Fatal("no data.json in the bundle")
	}
	return out.Bytes()
}

func trentCheck(t *testing.T, f checkFixture) string {
	t.Helper()
	resp, err := f.c.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity",
		map[string]string{"authorization": "Bearer " + f.dev.token(t, "u-trent", "tok-trent", time.Hour)}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() != nil {
		return "allow"
	}
	var body map[string]any
	_ = json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body)
	r, _ := body["reason"].(string)
	return r
}

func TestBundleUpdates(t *testing.T) {
	t.Parallel()
	keys := newSigningPair(t)
	m1 := demoModel(t, nil)
	b1 := build(t, m1, keys.private)
	srv := newBundleServer(t, b1.Data, b1.Revision)
	dev := newDevIdentity(t)
	persist := t.TempDir()
	cfg := Config{Bundle: BundleConfig{URL: srv.URL + "/bundles/keygate.tar.gz", VerificationKey: keys.pubFile,
		PersistDir: persist}, Identity: identityFile(dev)}
	s := startSidecar(t, cfg)
	waitFor(t, "the first bundle", s.Ready)
	f := checkFixture{s: s, c: authv3.NewAuthorizationClient(dial(t, s)), dev: dev}
	ctx := context.Background()
	if s.Revision() != b1.Revision {
		t.Fatalf("revision %q, want %q", s.Revision(), b1.Revision)
	}
	if got := trentCheck(t, f); got != "user_deleted" {
		t.Fatalf("trent: %s, want user_deleted", got)
	}

	t.Log("same ETag: 304, nothing re-activated")
	before := counterValue(t, s, "keygate_bundle_activations_total", "success")
	_ = s.TriggerBundle(ctx)
	if srv.count(304) < 1 {
		t.Fatalf("no 304 after an unchanged poll (codes %v)", srv.codes)
	}
	if got := counterValue(t, s, "keygate_bundle_activations_total", "success"); got != before {
		t.Fatalf("activations %v -> %v on a 304", before, got)
	}

	t.Log("tampered bundle: rejected, old revision keeps answering")
	srv.set(tamper(t, b1.Data), "tampered")
	_ = s.TriggerBundle(ctx)
	if s.Revision() != b1.Revision || trentCheck(t, f) != "user_deleted" {
		t.Fatalf("tampered bundle took effect: revision %q", s.Revision())
	}
	if counterValue(t, s, "keygate_bundle_activations_total", "failure") < 1 {
		t.Fatal("tampered bundle not counted as a failed activation")
	}

	t.Log("unsigned bundle: rejected")
	unsigned := build(t, demoModel(t, undeleteTrent), nil)
	srv.set(unsigned.Data, unsigned.Revision)
	_ = s.TriggerBundle(ctx)
	if s.Revision() != b1.Revision || trentCheck(t, f) != "user_deleted" {
		t.Fatalf("unsigned bundle took effect: revision %q", s.Revision())
	}

	t.Log("signed new revision: activated")
	b2 := build(t, demoModel(t, undeleteTrent), keys.private)
	srv.set(b2.Data, b2.Revision)
	_ = s.TriggerBundle(ctx)
	waitFor(t, "revision 2", func() bool { return s.Revision() == b2.Revision })
	if got := trentCheck(t, f); got != "allow" {
		t.Fatalf("trent after revision 2: %s, want allow", got)
	}
	if got := gaugeValue(t, s, "keygate_bundle_info", b2.Revision); got != 1 {
		t.Fatalf("keygate_bundle_info{revision=%s} = %v", b2.Revision, got)
	}

	t.Log("restart with the bundle server gone: the persisted revision answers")
	srv.Close()
	s2 := startSidecar(t, cfg)
	waitFor(t, "the persisted bundle", s2.Ready)
	if !s2.Ready() || s2.Revision() != b2.Revision {
		t.Fatalf("restart: ready %v revision %q, want %q from disk", s2.Ready(), s2.Revision(), b2.Revision)
	}
	f2 := checkFixture{s: s2, c: authv3.NewAuthorizationClient(dial(t, s2)), dev: dev}
	if got := trentCheck(t, f2); got != "allow" {
		t.Fatalf("trent after restart: %s, want allow", got)
	}
}

func undeleteTrent(s *model.Snapshot) {
	for i := range s.Users {
		if s.Users[i].ID == "u-trent" {
			s.Users[i].Deleted = false
		}
	}
}

func TestBundleFromFile(t *testing.T) {
	t.Parallel()
	b := build(t, demoModel(t, nil), nil)
	path := t.TempDir() + "/bundle.tar.gz"
	if err := writeFile(path, b.Data); err != nil {
		t.Fatal(err)
	}
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev)})
	waitFor(t, "the file bundle", s.Ready)
	if s.Revision() != b.Revision {
		t.Fatalf("revision %q, want %q", s.Revision(), b.Revision)
	}
}
