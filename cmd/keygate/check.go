package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/engine"
)

func init() { register(newCheckCmd) }

// exitDenied is check's exit code for a decision that denies (0 = allowed).
const exitDenied = 3

func newCheckCmd(e *env) *cobra.Command {
	var (
		src                                            sourceFlags
		bundlePath, verifyKey, verifyAlg, inputArg     string
		user, token, org, key, resource                string
		actor, action, role, team, workspace, decision string
		explain                                        bool
	)
	cmd := &cobra.Command{
		Use:   "check [authz|assign] [flags]",
		Short: "Evaluate a decision against a seed file, the database or a bundle",
		Long: `Evaluate data.keygate.authz.decision (default) or data.keygate.assign.decision.

The input comes from flags or from --input (a JSON document, or @FILE). The decision is printed as JSON;
--explain prints the grant paths or the reasons instead. Exit code: 0 allowed, 3 denied, 1 error, 2 bad usage.

  keygate check --seed demo.yaml --user u-bob --org org-layer5 --key "Delete Organization" --resource organization:org-layer5
  keygate check assign --bundle bundle.tar.gz --actor u-alice --action assign --role "Organization Admin" --user u-heidi --org org-layer5`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := "authz"
			if len(args) == 1 {
				kind = args[0]
			}
			query := map[string]string{"authz": engine.AuthzDecision, "assign": engine.AssignDecision}[kind]
			if decision != "" {
				query = decision
			}
			if query == "" {
				return usageErr("unknown decision %q (want authz or assign)", kind)
			}
			input, err := checkInput(inputArg, kind, map[string]string{
				"user": user, "token": token, "org": org, "key": key, "actor": actor, "action": action,
				"role": role, "team": team, "workspace": workspace,
			}, resource)
			if err != nil {
				return err
			}
			eng, err := checkEngine(cmd.Context(), &src, bundlePath, verifyKey, verifyAlg)
			if err != nil {
				return err
			}
			result, defined, err := eng.Eval(cmd.Context(), query, input)
			if err != nil {
				return err
			}
			if !defined {
				return fmt.Errorf("%s is undefined for this input", query)
			}
			if explain {
				printExplanation(e, result)
			} else {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(result); err != nil {
					return err
				}
			}
			if denied, why := deniedResult(result); denied {
				return &exitError{code: exitDenied, err: errors.New("denied: " + why)}
			}
			return nil
		},
	}
	src.register(cmd, e)
	f := cmd.Flags()
	f.StringVar(&bundlePath, "bundle", "", "evaluate this bundle (.tar.gz) instead of compiling --seed/--database-url")
	f.StringVar(&verifyKey, "verification-key", "", "verify the bundle's signature with this public key (PEM) or HMAC secret file")
	f.StringVar(&verifyAlg, "verification-alg", "RS256", "algorithm of --verification-key")
	f.StringVar(&inputArg, "input", "", "the input document as JSON, or @FILE")
	f.StringVar(&decision, "decision", "", "evaluate another path (e.g. data.keygate.authz.keys)")
	f.StringVar(&user, "user", "", "subject user id (authz) or target user id (assign)")
	f.StringVar(&token, "token", "", "subject token id (authz)")
	f.StringVar(&org, "org", "", "organization id")
	f.StringVar(&key, "key", "", "key id, name or alias (authz)")
	f.StringVar(&resource, "resource", "", "resource as TYPE:ID, e.g. design:d1 (authz)")
	f.StringVar(&actor, "actor", "", "acting user id (assign)")
	f.StringVar(&action, "action", "assign", "assign or unassign (assign)")
	f.StringVar(&role, "role", "", "role id or name (assign)")
	f.StringVar(&team, "team", "", "team id (assign, team roles)")
	f.StringVar(&workspace, "workspace", "", "workspace id (assign, workspace roles)")
	f.BoolVar(&explain, "explain", false, "print the grant paths (allowed) or the reasons (denied) instead of JSON")
	return cmd
}

func checkInput(raw, kind string, fields map[string]string, resource string) (map[string]any, error) {
	if raw != "" {
		if strings.HasPrefix(raw, "@") {
			b, err := os.ReadFile(raw[1:])
			if err != nil {
				return nil, usageErr("--input: %v", err)
			}
			raw = string(b)
		}
		var in map[string]any
		if err := json.Unmarshal([]byte(raw), &in); err != nil {
			return nil, usageErr("--input: not a JSON object: %v", err)
		}
		return in, nil
	}
	in := map[string]any{}
	names := []string{"user", "token", "org", "key"}
	if kind == "assign" {
		names = []string{"actor", "action", "role", "user", "org", "team", "workspace"}
	}
	for _, n := range names {
		if v := fields[n]; v != "" {
			in[n] = v
		}
	}
	if resource != "" && kind == "authz" {
		typ, id, ok := strings.Cut(resource, ":")
		if !ok || typ == "" || id == "" {
			return nil, usageErr("--resource: want TYPE:ID, got %q", resource)
		}
		in["resource"] = map[string]any{"type": typ, "id": id}
	}
	return in, nil
}

func checkEngine(ctx context.Context, src *sourceFlags, bundlePath, verifyKey, verifyAlg string) (*engine.Engine, error) {
	var data []byte
	if bundlePath != "" {
		var err error
		if data, err = os.ReadFile(bundlePath); err != nil {
			return nil, usageErr("--bundle: %v", err)
		}
	} else {
		m, err := src.model(ctx)
		if err != nil {
			return nil, err
		}
		b, err := compiler.Build(m, compiler.Options{})
		if err != nil {
			return nil, err
		}
		data = b.Data
	}
	v := engine.Verification{Alg: verifyAlg}
	if verifyKey != "" {
		k, err := os.ReadFile(verifyKey)
		if err != nil {
			return nil, usageErr("--verification-key: %v", err)
		}
		v.Key = k
	}
	b, err := engine.Read(data, v)
	if err != nil {
		return nil, err
	}
	return engine.New(ctx, b)
}

// printExplanation prints a decision for people: the grant paths when allowed, the reasons when denied.
func printExplanation(e *env, result any) {
	obj, _ := result.(map[string]any)
	if obj["allow"] == true {
		fmt.Fprintln(e.stdout, "ALLOW")
		if via, ok := obj["via"].(string); ok && via != "" {
			fmt.Fprintf(e.stdout, "  via %s\n", via)
		}
		grants, _ := obj["grants"].([]any)
		for _, g := range grants {
			fmt.Fprintf(e.stdout, "  %s\n", grantPath(g))
		}
		return
	}
	fmt.Fprintln(e.stdout, "DENY")
	reasons, _ := obj["reasons"].([]any)
	for _, r := range reasons {
		fmt.Fprintf(e.stdout, "  reason: %v\n", r)
	}
	if k, ok := obj["key"]; ok {
		fmt.Fprintf(e.stdout, "  key: %v\n", k)
	}
}

// grantPath renders one grant as assignment -> role -> keychain -> key.
func grantPath(g any) string {
	m, _ := g.(map[string]any)
	name := func(v any) string {
		if o, ok := v.(map[string]any); ok {
			if n, ok := o["name"].(string); ok && n != "" {
				return fmt.Sprintf("%s (%v)", n, o["id"])
			}
			return fmt.Sprint(o["id"])
		}
		return fmt.Sprint(v)
	}
	via := fmt.Sprint(m["via"])
	if via != "role" {
		b, _ := json.Marshal(m)
		return via + ": " + string(b)
	}
	where := fmt.Sprint(m["scope"])
	for _, k := range []string{"team", "workspace"} {
		if v, ok := m[k]; ok {
			where += " " + fmt.Sprint(v)
		}
	}
	s := fmt.Sprintf("assignment (%s) -> role %s -> keychain %s -> key %s", where, name(m["role"]), name(m["keychain"]), name(m["key"]))
	if m["owner_only"] == true {
		s += " [owner only]"
	}
	return s
}

// deniedResult reads a decision: false, or an object whose "allow" (authz, assign) or "allowed" (envoy) is not
// true. Other results (listings such as keys or key_grants) are answers, not decisions: never denied.
func deniedResult(result any) (bool, string) {
	switch r := result.(type) {
	case bool:
		return !r, "false"
	case map[string]any:
		for _, field := range []string{"allow", "allowed"} {
			if v, ok := r[field]; ok {
				return v != true, fmt.Sprint(r["reasons"])
			}
		}
	}
	return false, ""
}
