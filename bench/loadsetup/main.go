// Command loadsetup prepares a load run (bench/ghz.sh): a bundle of N synthetic users (internal/synth), a dev
// JWT key with its JWKS, and ghz request files (JSON arrays, sent round-robin):
//
//   - mix-jwt.json, mix-metadata.json: -mix different CheckRequests like production traffic, the identity as a
//     bearer JWT or as jwt_authn's verified payload (metadataContext): many users in many orgs, allowed and
//     denied for no grant (a key the role lacks, an org the user is not in), an unknown route, no identity, no
//     org, a malformed path;
//   - allow-*.json and deny-*.json: the allowed and the denied requests of the mix alone (split by the rule
//     the generator used, checked against the server's own counts by bench/ghz.sh);
//   - hostile.json: what a hostile client sends (paths of 30,000 segments, 60 KB headers, malformed paths).
//
// Benchmark tooling only: the key is a throwaway generated into the output folder.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/synth"
)

func main() {
	users := flag.Int("users", 100000, "synthetic users")
	dir := flag.String("dir", "bench/out", "output folder")
	mix := flag.Int("mix", 2000, "different requests in the mixed files")
	flag.Parse()
	if err := run(*users, *mix, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "loadsetup:", err)
		os.Exit(1)
	}
}

func run(users, mix int, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	snap := synth.Generate(synth.Config{Users: users})
	routes, err := catalog.IdentityRoutes()
	if err != nil {
		return err
	}
	m, err := catalog.Resolve(model.Merge(snap, routes))
	if err != nil {
		return err
	}
	b, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		return err
	}
	if err := compiler.WriteFile(filepath.Join(dir, "bundle.tar.gz"), b.Data); err != nil {
		return err
	}
	keyPath, jwksPath, err := identity.GenerateDevKey(dir)
	if err != nil {
		return err
	}
	key, err := identity.LoadSigningKey(keyPath)
	if err != nil {
		return err
	}
	if err := writeMixes(dir, key, users, mix); err != nil {
		return err
	}
	fmt.Printf("bundle %s (revision %s, %d bytes), jwks %s, request files in %s\n",
		filepath.Join(dir, "bundle.tar.gz"), b.Revision, len(b.Data), jwksPath, dir)
	return nil
}

// kind is one sort of request of the mix, with its share (out of 100) and whether the policy allows it.
type kind struct {
	name    string
	share   int
	allowed bool
}

// The mix: 54% allowed, the rest denied for several reasons (as in the measurement).
var kinds = []kind{
	{"teams_home_org", 30, true},     // GET .../orgs/{home}/teams: the User role holds View All Teams
	{"teams_away_org", 14, true},     // the same in the user's second org
	{"profile", 10, true},            // GET /api/identity/users/profile with the org header
	{"no_grant_role", 12, false},     // DELETE .../orgs/{home}/roles/{id}: the User role lacks Delete Custom Roles
	{"no_grant_other_org", 8, false}, // an org the user is not a member of
	{"route_not_found", 8, false},    // GET .../orgs/{home}/nope
	{"unauthenticated", 8, false},    // no identity
	{"missing_org", 6, false},        // the profile without the org header
	{"invalid_path", 4, false},       // GET .../orgs//teams
}

func writeMixes(dir string, key jwk.Key, users, n int) error {
	nOrgs := max(users/1000, 2)
	rng := rand.New(rand.NewPCG(1, 2))
	var jwtMix, mdMix, jwtAllow, jwtDeny, mdAllow, mdDeny []any
	total := 0
	for _, k := range kinds {
		total += k.share
	}
	for i := 0; i < n; i++ {
		pick := rng.IntN(total)
		var k kind
		for _, c := range kinds {
			if pick < c.share {
				k = c
				break
			}
			pick -= c.share
		}
		// Users from n/a quarter onwards hold only the User role (i%4 in {2,3} in internal/synth) and are not
		// org owners: their answers follow the kind.
		u := nOrgs + 4*rng.IntN(max((users-nOrgs)/4, 1)) + 2 + rng.IntN(2)
		u = min(u, users-1)
		home, away := u%nOrgs, (u/nOrgs+u+1)%nOrgs
		if away == home {
			away = (home + 1) % nOrgs
		}
		other := (home + nOrgs/2 + 1) % nOrgs
		for other == home || other == away {
			other = (other + 1) % nOrgs
		}
		method, path, org, ident := "GET", "", "", true
		switch k.name {
		case "teams_home_org":
			path = "/api/identity/orgs/" + synth.OrgID(home) + "/teams"
		case "teams_away_org":
			path = "/api/identity/orgs/" + synth.OrgID(away) + "/teams"
		case "profile":
			path, org = "/api/identity/users/profile", synth.OrgID(home)
		case "no_grant_role":
			method, path = "DELETE", "/api/identity/orgs/"+synth.OrgID(home)+"/roles/r-"+fmt.Sprint(i)
		case "no_grant_other_org":
			path = "/api/identity/orgs/" + synth.OrgID(other) + "/teams"
		case "route_not_found":
			path = "/api/identity/orgs/" + synth.OrgID(home) + "/nope"
		case "unauthenticated":
			path, ident = "/api/identity/orgs/"+synth.OrgID(home)+"/teams", false
		case "missing_org":
			path = "/api/identity/users/profile"
		case "invalid_path":
			path = "/api/identity/orgs//teams"
		}
		headers := map[string]string{"accept": "application/json", "user-agent": "ghz", "x-request-id": fmt.Sprint("load-", i)}
		if org != "" {
			headers["x-current-orgid"] = org
		}
		user := synth.UserID(u)
		withJWT, withMD := checkRequest(method, path, headers), checkRequest(method, path, headers)
		if ident {
			tok, err := identity.Mint(key, identity.TokenSpec{User: user, TTL: 24 * time.Hour})
			if err != nil {
				return err
			}
			withJWT["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)["headers"].(map[string]string)["authorization"] = "Bearer " + tok
			withMD["attributes"].(map[string]any)["metadataContext"] = map[string]any{"filterMetadata": map[string]any{
				"envoy.filters.http.jwt_authn": map[string]any{"verified_jwt": map[string]any{"sub": user, "iss": "bench"}}}}
		}
		jwtMix, mdMix = append(jwtMix, withJWT), append(mdMix, withMD)
		if k.allowed {
			jwtAllow, mdAllow = append(jwtAllow, withJWT), append(mdAllow, withMD)
		} else {
			jwtDeny, mdDeny = append(jwtDeny, withJWT), append(mdDeny, withMD)
		}
	}
	hostile := hostileRequests(rng)
	for name, v := range map[string][]any{"mix-jwt.json": jwtMix, "mix-metadata.json": mdMix,
		"allow-jwt.json": jwtAllow, "deny-jwt.json": jwtDeny, "allow-metadata.json": mdAllow,
		"deny-metadata.json": mdDeny, "hostile.json": hostile} {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func checkRequest(method, path string, headers map[string]string) map[string]any {
	h := make(map[string]string, len(headers)+1)
	for k, v := range headers {
		h[k] = v
	}
	return map[string]any{"attributes": map[string]any{
		"request": map[string]any{"http": map[string]any{
			"method": method, "path": path, "host": "api.local", "scheme": "http", "headers": h,
		}},
		"contextExtensions": map[string]string{"service": "identity"},
	}}
}

// hostileRequests: paths of 30,000 segments (60 KB), 60 KB header values, malformed and ambiguous paths.
func hostileRequests(rng *rand.Rand) []any {
	var out []any
	long := "/api/identity/orgs" + strings.Repeat("/a", 30000)
	for i := 0; i < 50; i++ {
		switch i % 5 {
		case 0:
			out = append(out, checkRequest("GET", long, nil))
		case 1:
			out = append(out, checkRequest("GET", "/api/identity/orgs/x/teams", map[string]string{
				"x-filler": strings.Repeat("z", 60000), "x-current-orgid": fmt.Sprint(rng.IntN(1000))}))
		case 2:
			out = append(out, checkRequest("GET", "/api/identity/orgs/%2e%2e/teams", nil))
		case 3:
			out = append(out, checkRequest("GET", "/api/identity/orgs/"+strings.Repeat("x", 8000)+"/teams", nil))
		case 4:
			out = append(out, checkRequest("POST", "//api/identity/orgs", map[string]string{"authorization": "Bearer garbage"}))
		}
	}
	return out
}
