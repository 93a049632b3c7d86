package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/keygate/keygate/internal/envoyauth"
)

// The fast path is the Go speed layer of data.keygate.envoy.response: it matches the route in Go from the
// active bundle's route table exactly as envoy.rego does (same candidates, most literal segments first, ties
// in table order), builds the data.keygate.authz input, and evaluates data.keygate.envoy.routed once, which
// gives the same answer as response for an allowed and a denied request alike (TestFastPathMatchesPolicy,
// TestFastPathRefusesMalformedPaths and FuzzFastPathMatchesPolicy hold the two together). A request it
// cannot match (no route, no org, an invalid path, no subject) is answered by the full response instead: one
// evaluation per Check either way.

const pathEnvoyRouted = "data.keygate.envoy.routed"

type fastRoute struct {
	segments []string // literal segment, or "" for a parameter
	params   map[string]int
	literals int
	key      string
	orgFrom  string
	resType  string
	resParam string
	pattern  string
	keyName  string
}

type fastPath struct {
	routed *rego.PreparedEvalQuery
	routes map[string]map[string]map[int][]fastRoute // service -> method -> segments -> candidates
	tokens map[string]struct{}
}

type routeDoc struct {
	Segments      []string `json:"segments"`
	Key           string   `json:"key"`
	OrgFrom       string   `json:"org_from"`
	ResourceType  string   `json:"resource_type"`
	ResourceParam string   `json:"resource_param"`
	Pattern       string   `json:"pattern"`
}

func isParam(s string) bool { return strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") }

// newFastPath reads the route table and token ids from the active bundle's data.
func newFastPath(ctx context.Context, store storage.Store, routed *rego.PreparedEvalQuery) (*fastPath, error) {
	var doc map[string]map[string]map[string][]routeDoc
	if err := readJSON(ctx, store, "/keygate/db/routes", &doc); err != nil {
		return nil, err
	}
	var tokens map[string]json.RawMessage
	if err := readJSON(ctx, store, "/keygate/db/tokens", &tokens); err != nil {
		return nil, err
	}
	var keys map[string]struct {
		Name string `json:"name"`
	}
	if err := readJSON(ctx, store, "/keygate/db/keys", &keys); err != nil {
		return nil, err
	}
	f := &fastPath{routed: routed, routes: map[string]map[string]map[int][]fastRoute{}, tokens: make(map[string]struct{}, len(tokens))}
	for id := range tokens {
		f.tokens[id] = struct{}{}
	}
	for svc, methods := range doc {
		f.routes[svc] = map[string]map[int][]fastRoute{}
		for method, byLen := range methods {
			f.routes[svc][method] = map[int][]fastRoute{}
			for n, list := range byLen {
				length, err := strconv.Atoi(n)
				if err != nil {
					return nil, fmt.Errorf("route table: bucket %q is not a number", n)
				}
				var cands []fastRoute
				for _, r := range list {
					fr := fastRoute{params: map[string]int{}, key: r.Key, orgFrom: r.OrgFrom, resType: r.ResourceType,
						resParam: r.ResourceParam, pattern: r.Pattern, keyName: keys[r.Key].Name}
					for i, s := range r.Segments {
						if isParam(s) {
							fr.params[strings.Trim(s, "{}")] = i
							fr.segments = append(fr.segments, "")
							continue
						}
						fr.literals++
						fr.segments = append(fr.segments, s)
					}
					cands = append(cands, fr)
				}
				// Most literal segments first; ties keep table order (as envoy.rego chooses).
				sort.SliceStable(cands, func(i, j int) bool { return cands[i].literals > cands[j].literals })
				f.routes[svc][method][length] = cands
			}
		}
	}
	return f, nil
}

func readJSON(ctx context.Context, store storage.Store, path string, into any) error {
	v, err := storage.ReadOne(ctx, store, storage.MustParsePath(path))
	if storage.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if av, ok := v.(ast.Value); ok {
		if v, err = ast.JSON(av); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// match finds the route of a request and binds its org and resource. ok is false when there is no route or
// no org: the full policy then answers (with route_not_found or missing_org).
//
// A path with an empty, "." or ".." segment never matches (envoy.rego's _invalid_path): NormalizePath lets
// a trailing slash through as an empty last segment, and a parameter bound to "" named no resource, which
// let "PUT /api/identity/orgs/org-layer5/roles/" be allowed here while the policy denies it (invalid_path).
func (f *fastPath) match(r *envoyauth.Request) (route *fastRoute, org, resID string, ok bool) {
	for _, s := range r.Segments {
		if s == "" || s == "." || s == ".." {
			return nil, "", "", false
		}
	}
	cands := f.routes[r.Service][strings.ToUpper(r.Method)][len(r.Segments)]
next:
	for i := range cands {
		c := &cands[i]
		for j, s := range c.segments {
			if s != "" && s != r.Segments[j] {
				continue next
			}
		}
		route = c
		break
	}
	if route == nil {
		return nil, "", "", false
	}
	if route.orgFrom == "header" {
		org = r.OrgHeader
	} else if i, ok := route.params[route.orgFrom]; ok {
		org = r.Segments[i]
	}
	if org == "" {
		return nil, "", "", false
	}
	if route.resType != "" {
		if i, ok := route.params[route.resParam]; ok {
			resID = r.Segments[i]
		}
	}
	return route, org, resID, true
}

// input builds data.keygate.envoy.routed's input for a matched request: the data.keygate.authz query as
// envoy.rego's _query builds it, and the route's pattern.
func (f *fastPath) input(id envoyauth.Identity, route *fastRoute, org, resID string) ast.Value {
	q := ast.NewObjectWithCapacity(5)
	q.Insert(ast.InternedTerm("user"), ast.StringTerm(id.User))
	if _, known := f.tokens[id.Token]; known && id.Token != "" {
		q.Insert(ast.InternedTerm("token"), ast.StringTerm(id.Token))
	}
	q.Insert(ast.InternedTerm("org"), ast.StringTerm(org))
	q.Insert(ast.InternedTerm("key"), ast.StringTerm(route.key))
	if route.resType != "" {
		q.Insert(ast.InternedTerm("resource"), ast.ObjectTerm(
			ast.Item(ast.InternedTerm("type"), ast.StringTerm(route.resType)),
			ast.Item(ast.InternedTerm("id"), ast.StringTerm(resID))))
	}
	return ast.NewObject(
		ast.Item(ast.InternedTerm("query"), ast.NewTerm(q)),
		ast.Item(ast.InternedTerm("route"), ast.StringTerm(route.pattern)),
	)
}
