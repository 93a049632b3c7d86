// Package importer reads the public Layer5 permissions catalogue (CSV: keys, role x key grants with owner-only
// cells, keychain membership) into a keygate snapshot.
package importer

import (
	"crypto/sha1"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/keygate/keygate/internal/model"
)

// Standard file names of the public catalogue.
const (
	KeysFile      = "layer5-default-keys.csv"
	GrantsFile    = "layer5-default-role-grants.csv"
	KeychainsFile = "layer5-default-keychain-keys.csv"
)

// roleNames maps the catalogue's role names to keygate's default roles. Other names become system roles of
// their own (organization scope).
var roleNames = map[string]string{
	"Provider Admin":               model.RoleProviderAdmin,
	"Org Admin":                    model.RoleOrganizationAdmin,
	"Organization Admin":           model.RoleOrganizationAdmin,
	"Org Billing Manager":          model.RoleBillingManager,
	"Organization Billing Manager": model.RoleBillingManager,
	"Workspace Admin":              model.RoleWorkspaceAdmin,
	"Workspace Manager":            model.RoleWorkspaceManager,
	"Team Admin":                   model.RoleTeamAdmin,
	"Team Manager":                 model.RoleTeamManager,
	"User":                         model.RoleUser,
}

// Stats counts what an import read.
type Stats struct{ Keys, Grants, OwnerOnly, Keychains int }

// Files names the CSV files to read; empty means not given.
type Files struct{ Keys, Grants, Keychains string }

// InDir returns the standard file names in dir, those that exist.
func InDir(dir string) Files {
	var f Files
	if p := filepath.Join(dir, KeysFile); exists(p) {
		f.Keys = p
	}
	if p := filepath.Join(dir, GrantsFile); exists(p) {
		f.Grants = p
	}
	if p := filepath.Join(dir, KeychainsFile); exists(p) {
		f.Keychains = p
	}
	return f
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Import reads the given files into a snapshot: keys (system keys), the catalogue's keychains, and per role a
// keychain of its grants with the owner-only ones marked, extending the default role of that name.
func Import(f Files) (model.Snapshot, Stats, error) {
	return importWith(f, func(path string) (io.ReadCloser, error) { return os.Open(path) })
}

// importWith is Import reading files through open (tests read from memory).
func importWith(f Files, open func(path string) (io.ReadCloser, error)) (model.Snapshot, Stats, error) {
	readCSV := func(path string, required []string, each func(line int, row map[string]string) error) error {
		return readCSV(open, path, required, each)
	}
	var s model.Snapshot
	var st Stats
	if f.Keys == "" {
		return s, st, errors.New("a keys CSV is required")
	}
	known := map[string]bool{}
	err := readCSV(f.Keys, []string{"id", "name", "category"}, func(line int, row map[string]string) error {
		id, name := strings.TrimSpace(row["id"]), strings.TrimSpace(row["name"])
		if id == "" || name == "" {
			return fmt.Errorf("line %d: id and name are required", line)
		}
		if known[id] {
			return fmt.Errorf("line %d: duplicate key id %q", line, id)
		}
		known[id] = true
		s.Keys = append(s.Keys, model.Key{ID: id, Name: name, Category: row["category"], Function: Function(name), System: true})
		return nil
	})
	if err != nil {
		return s, st, err
	}
	st.Keys = len(s.Keys)

	if f.Keychains != "" {
		byName := map[string][]string{}
		err := readCSV(f.Keychains, []string{"keychain", "key_id"}, func(line int, row map[string]string) error {
			if !known[row["key_id"]] {
				return fmt.Errorf("line %d: unknown key id %q", line, row["key_id"])
			}
			byName[row["keychain"]] = append(byName[row["keychain"]], row["key_id"])
			return nil
		})
		if err != nil {
			return s, st, err
		}
		for _, name := range slices.Sorted(maps.Keys(byName)) {
			s.Keychains = append(s.Keychains, model.Keychain{ID: stableID("keychain", name), Name: name, Keys: byName[name], System: true})
		}
		st.Keychains = len(byName)
	}

	if f.Grants != "" {
		type grants struct{ keys, ownerOnly []string }
		byRole := map[string]*grants{}
		err := readCSV(f.Grants, []string{"role", "key_id", "grant"}, func(line int, row map[string]string) error {
			role, key := strings.TrimSpace(row["role"]), row["key_id"]
			if !known[key] {
				return fmt.Errorf("line %d: unknown key id %q", line, key)
			}
			g := byRole[role]
			if g == nil {
				g = &grants{}
				byRole[role] = g
			}
			switch row["grant"] {
			case "allow":
			case "allow_if_owner":
				g.ownerOnly = append(g.ownerOnly, key)
				st.OwnerOnly++
			default:
				return fmt.Errorf("line %d: grant %q is neither allow nor allow_if_owner", line, row["grant"])
			}
			g.keys = append(g.keys, key)
			st.Grants++
			return nil
		})
		if err != nil {
			return s, st, err
		}
		for _, role := range slices.Sorted(maps.Keys(byRole)) {
			g := byRole[role]
			kc := model.Keychain{ID: stableID("grants", role), Name: "Layer5 " + role + " grants", Keys: g.keys, System: true}
			s.Keychains = append(s.Keychains, kc)
			if name, ok := roleNames[role]; ok {
				// No id: extends the default role of that name.
				s.Roles = append(s.Roles, model.Role{Name: name, Keychains: []string{kc.ID}, OwnerOnly: g.ownerOnly})
				continue
			}
			s.Roles = append(s.Roles, model.Role{ID: stableID("role", role), Name: role, Scope: model.ScopeOrganization,
				Keychains: []string{kc.ID}, OwnerOnly: g.ownerOnly})
		}
	}
	return s, st, nil
}

// Function classifies a key by its name's verb: create, read, update, delete, or the verb itself for special
// actions (approve, deploy, connect, ...).
func Function(name string) string {
	verb, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(name)), " ")
	switch verb {
	case "view", "details", "download", "read", "list", "export":
		return "read"
	case "create", "add", "clone", "import", "invite":
		return "create"
	case "edit", "update", "assign", "transfer", "publish", "unpublish", "share", "promote", "manage":
		return "update"
	case "delete", "remove":
		return "delete"
	case "":
		return "special"
	}
	return verb
}

// stableID derives a deterministic UUID-shaped id (name-based, SHA-1 as in UUID v5) for imported objects
// that the catalogue does not give ids to, so that re-imports are identical.
func stableID(kind, name string) string {
	h := sha1.Sum([]byte("keygate:" + kind + ":" + name))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func readCSV(open func(string) (io.ReadCloser, error), path string, required []string, each func(line int, row map[string]string) error) error {
	f, err := open(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("reading %s: header: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	for _, req := range required {
		if _, ok := col[req]; !ok {
			return fmt.Errorf("reading %s: no %q column (have %s)", path, req, strings.Join(header, ", "))
		}
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		row := make(map[string]string, len(col))
		for name, i := range col {
			if i < len(rec) {
				row[name] = rec[i]
			}
		}
		if err := each(line, row); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
}
