package sidecar

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestDataAPIMatchesOPAEval asks the sidecar's /v1/data and `opa eval -b` the same questions about the same
// bundle.
func TestDataAPIMatchesOPAEval(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs go tool opa")
	}
	b := build(t, demoModel(t, nil), nil)
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := writeFile(path, b.Data); err != nil {
		t.Fatal(err)
	}
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev)})
	waitFor(t, "the bundle", s.Ready)

	cases := []struct{ name, path, input string }{
		{"authz decision allowed", "keygate/authz/decision", `{"user":"u-alice","org":"org-layer5","key":"View All Users"}`},
		{"authz decision denied", "keygate/authz/decision", `{"user":"u-heidi","org":"org-layer5","key":"Create Custom Roles"}`},
		{"authz decision by token", "keygate/authz/decision", `{"token":"tok-bob-revoked","org":"org-layer5","key":"View All Users"}`},
		{"assign decision", "keygate/assign/decision", `{"actor":"u-alice","action":"assign","role":"User","user":"u-heidi","org":"org-layer5"}`},
		{"envoy response", "keygate/envoy/response", `{"attributes":{"request":{"http":{"method":"GET","path":"/api/identity/orgs/org-layer5/users","headers":{}}},"contextExtensions":{"service":"identity"}},"parsed_path":["api","identity","orgs","org-layer5","users"],"parsed_query":{},"identity":{"user":"u-alice","token":"tok-alice"}}`},
		{"undefined document", "keygate/authz/key_grants/nosuchkey", `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := http.Post("http://"+s.HTTPAddr().String()+"/v1/data/"+tc.path, "application/json",
				strings.NewReader(`{"input":`+tc.input+`}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
				t.Fatalf("/v1/data: %d %v", resp.StatusCode, err)
			}
			if got["decision_id"] == nil {
				t.Fatalf("no decision_id in %v", got)
			}

			cmd := exec.Command("go", "tool", "opa", "eval", "--format", "json", "-b", path, "--stdin-input",
				"data."+strings.ReplaceAll(tc.path, "/", "."))
			cmd.Stdin = strings.NewReader(tc.input)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("opa eval: %v\n%s", err, stderr.String())
			}
			var want struct {
				Result []struct {
					Expressions []struct {
						Value any `json:"value"`
					} `json:"expressions"`
				} `json:"result"`
			}
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatalf("opa eval output %s: %v", out, err)
			}
			if len(want.Result) == 0 {
				if _, ok := got["result"]; ok {
					t.Fatalf("sidecar result %v, opa undefined", got["result"])
				}
				return
			}
			if !reflect.DeepEqual(got["result"], want.Result[0].Expressions[0].Value) {
				t.Fatalf("sidecar %v\nopa eval %v", got["result"], want.Result[0].Expressions[0].Value)
			}
		})
	}
}
