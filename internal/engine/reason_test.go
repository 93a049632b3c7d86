package engine_test

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/engine"
	"github.com/keygate/keygate/internal/envoyauth"
)

// TestReasonCodesHaveOneSource: the reason codes the Go side knows (envoyauth, also the only values of the
// reason metric label), the policies' data.keygate.reason.codes and docs/decisions.md's "Reason codes" list
// are the same set.
func TestReasonCodesHaveOneSource(t *testing.T) {
	t.Parallel()
	m, err := catalog.DemoModel()
	if err != nil {
		t.Fatal(err)
	}
	out, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := engine.Read(out.Data, engine.Verification{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	v, ok, err := eng.Eval(context.Background(), "data.keygate.reason.codes", nil)
	if err != nil || !ok {
		t.Fatalf("data.keygate.reason.codes: %v %v", ok, err)
	}
	var rego []string
	for _, c := range v.([]any) {
		rego = append(rego, c.(string))
	}

	doc, err := os.ReadFile("../../docs/decisions.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, found := strings.Cut(string(doc), "\n## Reason codes\n")
	if !found {
		t.Fatal("docs/decisions.md has no '## Reason codes' section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	// The first paragraph says where the list lives; the list is what follows.
	_, section, _ = strings.Cut(strings.TrimLeft(section, "\n"), "\n\n")
	var docs []string
	for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(section, -1) {
		if !slices.Contains(docs, m[1]) {
			docs = append(docs, m[1])
		}
	}

	goCodes := envoyauth.Reasons()
	for _, l := range [][]string{rego, docs, goCodes} {
		slices.Sort(l)
	}
	if !slices.Equal(rego, goCodes) {
		t.Errorf("data.keygate.reason.codes and envoyauth differ:\n rego %v\n go   %v", rego, goCodes)
	}
	if !slices.Equal(docs, goCodes) {
		t.Errorf("docs/decisions.md and envoyauth differ:\n docs %v\n go   %v", docs, goCodes)
	}
}
