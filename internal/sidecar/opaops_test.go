package sidecar

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/envoyauth"
	"github.com/keygate/keygate/internal/model"
)

// pad rewrites a bundle with pad bytes of whitespace after data.json's document, keeping the signatures
// (OPA hashes the parsed JSON, so they stay valid: issue 11 item 2). The padding is streamed through gzip.
func pad(t *testing.T, data []byte, pad int64) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	spaces := bytes.Repeat([]byte(" "), 1<<20)
	padded := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		isData := strings.HasSuffix(h.Name, "data.json")
		if isData {
			h.Size = int64(len(body)) + pad
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(body)
		if isData {
			for n := pad; n > 0; n -= int64(len(spaces)) {
				_, _ = tw.Write(spaces[:min(n, int64(len(spaces)))])
			}
			padded = true
		}
	}
	_ = tw.Close()
	_ = zw.Close()
	if !padded {
		t.Fatal("no data.json in the bundle")
	}
	return out.Bytes()
}

// TestPaddedBundleRefused: a signed bundle whose data.json is padded past size_limit_bytes (decompressed;
// keygate's default 256 MiB) is refused from its tar header, quickly and without reading it, counted in
// keygate_bundle_refused_total{reason="size_limit"}, and the previous revision keeps answering. With OPA's
// own default (1 GiB) the 300 MiB bundle was read, parsed and activated.
func TestPaddedBundleRefused(t *testing.T) {
	keys := newSigningPair(t)
	b1 := build(t, demoModel(t, nil), keys.private)
	b2 := build(t, demoModel(t, func(s *model.Snapshot) { s.Users = s.Users[:len(s.Users)-1] }), keys.private)
	if b1.Revision == b2.Revision {
		t.Fatal("same revision")
	}
	padded := pad(t, b2.Data, 300<<20)
	t.Logf("padded bundle: %d bytes gzipped, data.json + 300 MiB", len(padded))

	srv := newBundleServer(t, b1.Data, b1.Revision)
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{URL: srv.URL + "/bundles/keygate.tar.gz",
		VerificationKey: keys.pubFile}, Identity: identityFile(dev)})
	waitFor(t, "the first bundle", s.Ready)

	srv.set(padded, "padded")
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	_ = s.TriggerBundle(context.Background())
	waitFor(t, "the refusal", func() bool {
		return counterValue(t, s, "keygate_bundle_refused_total", "size_limit") == 1
	})
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("refused in %s, %d MiB allocated", elapsed, allocated>>20)
	if elapsed > 5*time.Second {
		t.Errorf("refusal took %s", elapsed)
	}
	if allocated > 64<<20 {
		t.Errorf("refusing allocated %d MiB: the padding was read", allocated>>20)
	}
	if got := s.Revision(); got != b1.Revision {
		t.Fatalf("revision %q, want the old %q", got, b1.Revision)
	}
	if v := counterValue(t, s, "keygate_bundle_download_failures_total", "refused"); v != 1 {
		t.Errorf("download failures{refused} = %v", v)
	}
	c := authv3.NewAuthorizationClient(dial(t, s))
	resp, err := c.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity",
		map[string]string{"authorization": "Bearer " + dev.token(t, "u-alice", "tok-alice", time.Hour)}))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("old revision does not answer: %v %v", resp, err)
	}
}

// sink is an HTTP decision log and status service (OPA's APIs: POST /logs with gzipped JSON arrays of
// events, POST /status with status documents).
type sink struct {
	*httptest.Server
	mu     sync.Mutex
	events []map[string]any
	status []map[string]any
}

func newSink(t *testing.T) *sink {
	k := &sink{}
	k.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, _ := io.ReadAll(body)
		k.mu.Lock()
		defer k.mu.Unlock()
		switch {
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/logs"):
			var evs []map[string]any
			if err := json.Unmarshal(raw, &evs); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			k.events = append(k.events, evs...)
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/status"):
			var st map[string]any
			if err := json.Unmarshal(raw, &st); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			k.status = append(k.status, st)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(k.Close)
	return k
}

// event returns the logged event with this decision id.
func (k *sink) event(id string) map[string]any {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.events {
		if e["decision_id"] == id {
			return e
		}
	}
	return nil
}

// lastStatus returns the last status a sidecar (by labels.id) reported.
func (k *sink) lastStatus(id string) map[string]any {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := len(k.status) - 1; i >= 0; i-- {
		if sub(k.status[i], "labels")["id"] == id {
			return k.status[i]
		}
	}
	return nil
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

// TestOperatedLikeOPA is issue 12's "done when": two sidecars configured in OPA's format follow a bundle
// server, send their decisions in OPA's decision log schema to an HTTP decision log service and their
// status to a status service, serve GET /v1/status, and when the bundle server is cut, the readiness and
// the metrics of the stale sidecars change: /health?bundles 500, gRPC health NOT_SERVING,
// keygate_bundle_download_failures_total and keygate_bundle_stale up, while Checks keep being answered.
func TestOperatedLikeOPA(t *testing.T) {
	keys := newSigningPair(t)
	// keygate serve's bundle server (internal/bundleserver) on the demo seed, signing with the test key.
	bundles, err := bundleserver.New(bundleserver.Config{Addr: "127.0.0.1:0",
		Build:  compiler.Options{SigningKey: keys.private},
		Source: func(context.Context) (model.Snapshot, error) { return catalog.DemoWithRoutes() }}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cutBundleServer := runBundleServer(t, bundles)
	bundlesURL := "http://" + bundles.Addr().String()
	revision := bundles.Revision()
	logSink := newSink(t)
	dev := newDevIdentity(t)
	pub, err := os.ReadFile(keys.pubFile)
	if err != nil {
		t.Fatal(err)
	}
	pubJSON, _ := json.Marshal(string(pub))
	file := writeConfig(t, fmt.Sprintf(`
services:
  bundles:
    url: %s
  control:
    url: %s
bundles:
  keygate:
    service: bundles
    resource: /bundles/keygate.tar.gz
    polling:
      min_delay_seconds: 1
      max_delay_seconds: 1
    signing:
      keyid: keygate
keys:
  keygate:
    algorithm: RS256
    key: %s
decision_logs:
  service: control
  reporting:
    min_delay_seconds: 1
    max_delay_seconds: 1
status:
  service: control
labels:
  app: identity
keygate:
  grpc_addr: 127.0.0.1:0
  http_addr: 127.0.0.1:0
  max_bundle_age: 3s
  identity:
    jwks_file: %s
`, bundlesURL, logSink.URL, pubJSON, dev.jwksFile))

	type runningSidecar struct {
		s  *Sidecar
		c  authv3.AuthorizationClient
		h  healthpb.HealthClient
		id string
	}
	var sidecars []runningSidecar
	for _, name := range []string{"a", "b"} {
		cfg, err := LoadConfig(file, []string{"labels.sidecar=" + name})
		if err != nil {
			t.Fatal(err)
		}
		s := startSidecar(t, cfg)
		waitFor(t, "the first bundle", s.Ready)
		conn := dial(t, s)
		sidecars = append(sidecars, runningSidecar{s: s, c: authv3.NewAuthorizationClient(conn),
			h: healthpb.NewHealthClient(conn), id: s.engine.manager.Labels()["id"]})
	}
	if sidecars[0].id == sidecars[1].id {
		t.Fatalf("both sidecars have labels.id %q", sidecars[0].id)
	}

	alice := map[string]string{"authorization": "Bearer " + dev.token(t, "u-alice", "tok-alice", time.Hour)}
	for i, sc := range sidecars {
		name := string(rune('a' + i))
		allowed, err := sc.c.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", alice))
		if err != nil || allowed.GetOkResponse() == nil {
			t.Fatalf("%s: allowed Check: %v %v", name, allowed, err)
		}
		denied, err := sc.c.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", nil))
		if err != nil || denied.GetDeniedResponse() == nil {
			t.Fatalf("%s: denied Check: %v %v", name, denied, err)
		}
		allowID := headerValue(allowed.GetOkResponse().GetHeaders(), envoyauth.HeaderDecisionID)
		denyID := headerValue(denied.GetDeniedResponse().GetHeaders(), envoyauth.HeaderDecisionID)

		waitFor(t, name+"'s decisions at the log service", func() bool {
			return logSink.event(allowID) != nil && logSink.event(denyID) != nil
		})
		for _, tc := range []struct {
			id, outcome string
			allowed     bool
		}{{allowID, "allow", true}, {denyID, "deny", false}} {
			ev := logSink.event(tc.id)
			// OPA's decision log schema (EventV1), as a stock OPA logs a /v1/data or opa-envoy-plugin decision.
			if ev["path"] != "keygate/envoy/response" {
				t.Errorf("%s %s: path %v", name, tc.outcome, ev["path"])
			}
			labels := sub(ev, "labels")
			if labels["app"] != "identity" || labels["sidecar"] != name || labels["id"] != sc.id || labels["version"] == nil {
				t.Errorf("%s %s: labels %v", name, tc.outcome, labels)
			}
			if rev := sub(ev, "bundles", "keygate")["revision"]; rev != revision {
				t.Errorf("%s %s: bundles.keygate.revision %v, want %s", name, tc.outcome, rev, revision)
			}
			if p := sub(ev, "input", "attributes", "request", "http")["path"]; p != "/api/identity/orgs/org-layer5/users" {
				t.Errorf("%s %s: input path %v", name, tc.outcome, p)
			}
			if res := sub(ev, "result"); res["allowed"] != tc.allowed || res["http_status"] == nil {
				t.Errorf("%s %s: result %v", name, tc.outcome, res)
			}
			kg := sub(ev, "custom", "keygate")
			if kg["result"] != tc.outcome || kg["revision"] != revision || (!tc.allowed && kg["reason"] == nil) {
				t.Errorf("%s %s: custom.keygate %v", name, tc.outcome, kg)
			}
			if ts, _ := ev["timestamp"].(string); ts == "" {
				t.Errorf("%s %s: no timestamp", name, tc.outcome)
			}
			if sub(ev, "metrics")["timer_server_handler_ns"] == nil {
				t.Errorf("%s %s: metrics %v", name, tc.outcome, ev["metrics"])
			}
			if ev["req_id"] == nil {
				t.Errorf("%s %s: no req_id", name, tc.outcome)
			}
			if rb, _ := ev["requested_by"].(string); !strings.HasPrefix(rb, "127.0.0.1:") {
				t.Errorf("%s %s: requested_by %v", name, tc.outcome, ev["requested_by"])
			}
		}

		// Status: to the status service, and on GET /v1/status, in OPA's format.
		waitFor(t, name+"'s status at the status service", func() bool {
			st := logSink.lastStatus(sc.id)
			return st != nil && sub(st, "bundles", "keygate")["active_revision"] == revision
		})
		st := logSink.lastStatus(sc.id)
		if sub(st, "labels")["sidecar"] != name || sub(st, "bundles", "keygate")["last_successful_download"] == nil {
			t.Errorf("%s: status %v", name, st)
		}
		code, local := getJSON(t, "http://"+sc.s.HTTPAddr().String()+"/v1/status")
		res := sub(local, "result")
		if code != http.StatusOK || sub(res, "bundles", "keygate")["active_revision"] != revision ||
			sub(res, "plugins", "bundle")["state"] != "OK" || sub(res, "plugins", "decision_logs") == nil {
			t.Errorf("%s: GET /v1/status %d %v", name, code, local)
		}
		if code, _ := getJSON(t, "http://"+sc.s.HTTPAddr().String()+"/health?bundles"); code != http.StatusOK {
			t.Errorf("%s: /health?bundles %d before the cut", name, code)
		}
	}

	// A data API decision, logged as stock OPA logs POST /v1/data/keygate/authz/decision.
	resp, err := http.Post("http://"+sidecars[0].s.HTTPAddr().String()+"/v1/data/keygate/authz/decision", "application/json",
		strings.NewReader(`{"input":{"user":"u-alice","org":"org-layer5","key":"View All Users"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var answer map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	dataID, _ := answer["decision_id"].(string)
	waitFor(t, "the data API decision at the log service", func() bool { return logSink.event(dataID) != nil })
	ev := logSink.event(dataID)
	if ev["path"] != "keygate/authz/decision" || sub(ev, "input")["user"] != "u-alice" || sub(ev, "result")["allow"] != true ||
		sub(ev, "custom", "keygate")["result"] != "allow" || ev["requested_by"] == nil {
		t.Errorf("data API event %v", ev)
	}

	// Cut the bundle server: within max_bundle_age (3s) both sidecars become unready, with metrics saying why;
	// their Checks are still answered from the bundle they have.
	cutBundleServer()
	for i, sc := range sidecars {
		name := string(rune('a' + i))
		waitFor(t, name+" unready", func() bool {
			code, _ := getJSON(t, "http://"+sc.s.HTTPAddr().String()+"/health?bundles")
			return code == http.StatusInternalServerError
		})
		hr, err := sc.h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("%s: gRPC health %v %v, want NOT_SERVING", name, hr.GetStatus(), err)
		}
		if v := counterValue(t, sc.s, "keygate_bundle_download_failures_total", "request"); v < 1 {
			t.Errorf("%s: keygate_bundle_download_failures_total{reason=request} = %v", name, v)
		}
		if v := gaugeValue(t, sc.s, "keygate_bundle_stale", ""); v != 1 {
			t.Errorf("%s: keygate_bundle_stale = %v", name, v)
		}
		last := gaugeValue(t, sc.s, "keygate_bundle_last_success_timestamp_seconds", "")
		if age := time.Since(time.Unix(int64(last), 0)); last == 0 || age < 3*time.Second {
			t.Errorf("%s: keygate_bundle_last_success_timestamp_seconds %v (age %s)", name, last, age)
		}
		resp, err := sc.c.Check(context.Background(), checkReq("GET", "/api/identity/orgs/org-layer5/users", "identity", alice))
		if err != nil || resp.GetOkResponse() == nil {
			t.Errorf("%s: Check while cut off: %v %v", name, resp, err)
		}
	}
}

func headerValue(hs []*corev3.HeaderValueOption, key string) string {
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), key) {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// TestDecisionLogMaskAndDrop: decision_logs.mask_decision and drop_decision are OPA's, evaluated on each event
// against the bundle's policies (here at data.keygate.log, inside the bundle's keygate root).
func TestDecisionLogMaskAndDrop(t *testing.T) {
	var buf bytes.Buffer
	bb := opabundle.Bundle{
		Manifest: opabundle.Manifest{Revision: "masked", Roots: &[]string{"keygate"}},
		Data:     map[string]any{"keygate": map[string]any{"db": map[string]any{}}},
		Modules: []opabundle.ModuleFile{
			{URL: "/envoy.rego", Path: "/envoy.rego", Raw: []byte(`package keygate.envoy
response := {"allowed": true, "http_status": 200, "reasons": []}
`)},
			{URL: "/log.rego", Path: "/log.rego", Raw: []byte(`package keygate.log
mask contains "/input/attributes/request/http/headers/cookie"
mask contains {"op": "upsert", "path": "/result/masked", "value": true}
drop if input.input.attributes.request.http.path == "/healthz"
`)},
		},
	}
	if err := opabundle.NewWriter(&buf).Write(bb); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, "") + ".tar.gz"
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	logSink := newSink(t)
	dev := newDevIdentity(t)
	cfg, err := LoadConfig("", []string{
		"services.control.url=" + logSink.URL,
		"decision_logs.service=control,decision_logs.mask_decision=/keygate/log/mask,decision_logs.drop_decision=/keygate/log/drop",
		"decision_logs.reporting.min_delay_seconds=1,decision_logs.reporting.max_delay_seconds=1",
		"keygate.bundle.file=" + path, "keygate.identity.jwks_file=" + dev.jwksFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := startSidecar(t, cfg)
	waitFor(t, "the bundle", s.Ready)
	c := authv3.NewAuthorizationClient(dial(t, s))
	ids := map[string]string{}
	for _, p := range []string{"/healthz", "/api/x"} {
		resp, err := c.Check(context.Background(), checkReq("GET", p, "identity", map[string]string{"cookie": "session=s3cret"}))
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		ids[p] = headerValue(resp.GetOkResponse().GetHeaders(), envoyauth.HeaderDecisionID)
	}
	waitFor(t, "the logged decision", func() bool { return logSink.event(ids["/api/x"]) != nil })
	ev := logSink.event(ids["/api/x"])
	if _, ok := sub(ev, "input", "attributes", "request", "http", "headers")["cookie"]; ok {
		t.Errorf("cookie not erased: %v", ev["input"])
	}
	if erased, _ := ev["erased"].([]any); len(erased) != 1 || erased[0] != "/input/attributes/request/http/headers/cookie" {
		t.Errorf("erased = %v", ev["erased"])
	}
	if sub(ev, "result")["masked"] != true {
		t.Errorf("result = %v, want the upserted masked: true", ev["result"])
	}
	if logSink.event(ids["/healthz"]) != nil {
		t.Error("the /healthz decision was not dropped")
	}
}

// TestBundleServiceTLSAndBearer: the bundle download takes TLS (a custom CA) and bearer credentials from OPA's
// own service options.
func TestBundleServiceTLSAndBearer(t *testing.T) {
	b := build(t, demoModel(t, nil), nil)
	var sawToken sync.Map
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0ken" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		sawToken.Store("yes", true)
		w.Header().Set("ETag", `"`+b.Revision+`"`)
		_, _ = w.Write(b.Data)
	}))
	t.Cleanup(srv.Close)
	ca := writeConfig(t, "")
	if err := os.WriteFile(ca, pemCert(srv.Certificate().Raw), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := newDevIdentity(t)
	cfg, err := LoadConfig("", []string{
		"services.bundles.url=" + srv.URL, "services.bundles.tls.ca_cert=" + ca,
		"services.bundles.credentials.bearer.token=t0ken",
		"bundles.keygate.service=bundles,bundles.keygate.resource=/bundles/keygate.tar.gz",
		"keygate.identity.jwks_file=" + dev.jwksFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := startSidecar(t, cfg)
	waitFor(t, "the bundle over TLS", s.Ready)
	if s.Revision() != b.Revision {
		t.Fatalf("revision %q", s.Revision())
	}
	if _, ok := sawToken.Load("yes"); !ok {
		t.Error("the bearer token was not sent")
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
