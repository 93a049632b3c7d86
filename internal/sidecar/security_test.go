package sidecar

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/keygate/keygate/policies"
)

// TestEntrypointsAreTheAnnotatedRules holds Entrypoints (what the data API answers by default) to the
// rules annotated `entrypoint: true` in policies/keygate.
func TestEntrypointsAreTheAnnotatedRules(t *testing.T) {
	t.Parallel()
	files, err := policies.Modules()
	if err != nil {
		t.Fatal(err)
	}
	var mods []*ast.Module
	for _, f := range files {
		m, err := ast.ParseModuleWithOpts(f.Path, string(f.Raw), ast.ParserOptions{ProcessAnnotation: true})
		if err != nil {
			t.Fatal(err)
		}
		mods = append(mods, m)
	}
	as, errs := ast.BuildAnnotationSet(mods)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var annotated []string
	for _, e := range as.Flatten() {
		if e.Annotations.Entrypoint {
			annotated = append(annotated, e.Path.String())
		}
	}
	slices.Sort(annotated)
	annotated = slices.Compact(annotated)
	want := slices.Sorted(slices.Values(Entrypoints))
	if !slices.Equal(annotated, want) {
		t.Fatalf("annotated entrypoints %v\nsidecar.Entrypoints   %v", annotated, want)
	}
}

// TestDataAPIAnswersEntrypointsOnly is the regression test of the data API that served the whole model
// (GET /v1/data/keygate/db/tokens listed every token id): by default only decision entrypoints answer;
// everything else is 403 naming the setting, and the setting opens it.
func TestDataAPIAnswersEntrypointsOnly(t *testing.T) {
	t.Parallel()
	b := build(t, demoModel(t, nil), nil)
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := writeFile(path, b.Data); err != nil {
		t.Fatal(err)
	}
	dev := newDevIdentity(t)
	locked := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev)})
	open := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev),
		DataAPI: DataAPIConfig{AllowRawData: true}})
	waitFor(t, "the bundles", func() bool { return locked.Ready() && open.Ready() })

	ask := func(t *testing.T, s *Sidecar, method, p, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+s.HTTPAddr().String()+p, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	input := `{"input":{"user":"u-alice","org":"org-layer5","key":"View All Users"}}`
	refused := []struct{ name, method, path string }{
		{"the tokens", "GET", "/v1/data/keygate/db/tokens"},
		{"the whole model", "GET", "/v1/data/keygate/db"},
		{"the whole model by POST", "POST", "/v1/data/keygate/db"},
		{"all data", "GET", "/v1/data"},
		{"all data by POST", "POST", "/v1/data"},
		{"all data, trailing slash", "GET", "/v1/data/"},
		{"the keygate root", "GET", "/v1/data/keygate"},
		{"a whole package", "POST", "/v1/data/keygate/authz"},
		{"a private rule", "POST", "/v1/data/keygate/authz/_errors"},
		{"the reason table", "GET", "/v1/data/keygate/reason"},
		{"an escaped slash", "GET", "/v1/data/keygate%2Fdb"},
		{"a parent of an entrypoint", "GET", "/v1/data/keygate/envoy"},
		{"an unknown path", "GET", "/v1/data/keygate/nothing/here"},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			t.Parallel()
			code, body := ask(t, locked, tc.method, tc.path, input)
			if code != http.StatusForbidden {
				t.Fatalf("%s %s: %d %.300s", tc.method, tc.path, code, body)
			}
			var e apiError
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != "forbidden" ||
				!strings.Contains(e.Message, "data_api.allow_raw_data") {
				t.Fatalf("body %s does not name the setting", body)
			}
			if strings.Contains(body, "tok-alice") || strings.Contains(body, "u-heidi") {
				t.Fatalf("refusal leaks data: %s", body)
			}
		})
	}
	answered := []struct{ name, path, want string }{
		{"authz decision", "/v1/data/keygate/authz/decision", `"allow":true`},
		{"authz allow", "/v1/data/keygate/authz/allow", `"result":true`},
		{"authz reasons", "/v1/data/keygate/authz/reasons", `"result":[]`},
		{"authz keys", "/v1/data/keygate/authz/keys", `"result":[`},
		{"authz key grants", "/v1/data/keygate/authz/key_grants", `"owner_only"`},
		{"inside a decision", "/v1/data/keygate/authz/decision/allow", `"result":true`},
		{"assign decision", "/v1/data/keygate/assign/decision", `"reasons"`},
		{"assignable", "/v1/data/keygate/assign/assignable", `"result":`},
		{"envoy response", "/v1/data/keygate/envoy/response", `"allowed":false`},
		{"envoy allowed", "/v1/data/keygate/envoy/allowed", `"result":false`},
	}
	for _, tc := range answered {
		t.Run("answered: "+tc.name, func(t *testing.T) {
			t.Parallel()
			code, body := ask(t, locked, "POST", tc.path, input)
			if code != http.StatusOK || !strings.Contains(body, tc.want) {
				t.Fatalf("%s: %d %.300s, want %s", tc.path, code, body, tc.want)
			}
		})
	}
	t.Run("allow_raw_data answers the raw data", func(t *testing.T) {
		t.Parallel()
		for _, p := range []string{"/v1/data/keygate/db/tokens", "/v1/data"} {
			code, body := ask(t, open, "GET", p, "")
			if code != http.StatusOK || !strings.Contains(body, "tok-alice") {
				t.Fatalf("%s with allow_raw_data: %d %.200s", p, code, body)
			}
		}
	})
}
