package importer

import (
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/catalog"
)

// FuzzImport feeds arbitrary keys, grants and keychains CSV files to the importer, seeded with a valid
// catalogue and malformed ones: it never panics; an accepted import counts what it read (Stats), refers only
// to keys it read, marks as owner-only only keys a role is granted, is deterministic (the same files give the
// same snapshot), and resolving it against the built-in catalogue does not panic.
func FuzzImport(f *testing.F) {
	keys := "id,name,category\nk1,View Teams,Teams\nk2,Create Team,Teams\n"
	grants := "role,key_id,grant\nOrg Admin,k1,allow\nOrg Admin,k2,allow_if_owner\nAuditor,k1,allow\n"
	chains := "keychain,key_id\nTeams,k1\nTeams,k2\n"
	f.Add(keys, grants, chains)
	f.Add(keys, "", "")
	f.Add("", grants, chains)
	f.Add("id,name\nk1,View\nk1,View\n", "", "")
	f.Add(keys, "role,key_id,grant\nOrg Admin,k9,allow\n", "")
	f.Add(keys, "role,key_id,grant\nOrg Admin,k1,deny\n", "")
	f.Add("id,name,category\n\"k1,View\n", "", "")
	f.Add("id;name;category\nk1;View;x\n", "", "")
	f.Add(keys, "role,key_id\nOrg Admin,k1\n", "keychain\nTeams\n")
	f.Add("\xef\xbb\xbfid,name,category\nk1,View,x\n", "", "")
	f.Add(keys, "role,key_id,grant\n,k1,allow\n", "keychain,key_id\n,k1\n")
	f.Fuzz(func(t *testing.T, keys, grants, chains string) {
		content := map[string]string{"keys.csv": keys, "grants.csv": grants, "chains.csv": chains}
		open := func(path string) (io.ReadCloser, error) {
			c, ok := content[path]
			if !ok {
				return nil, os.ErrNotExist
			}
			return io.NopCloser(strings.NewReader(c)), nil
		}
		files := Files{Keys: "keys.csv"}
		if grants != "" {
			files.Grants = "grants.csv"
		}
		if chains != "" {
			files.Keychains = "chains.csv"
		}
		s, st, err := importWith(files, open)
		if err != nil {
			return
		}
		if st.Keys != len(s.Keys) {
			t.Fatalf("Stats.Keys %d, %d keys", st.Keys, len(s.Keys))
		}
		known := map[string]bool{}
		for _, k := range s.Keys {
			if k.ID == "" || k.Name == "" || known[k.ID] {
				t.Fatalf("key %+v: empty or repeated", k)
			}
			known[k.ID] = true
		}
		chainKeys := map[string][]string{}
		for _, kc := range s.Keychains {
			for _, k := range kc.Keys {
				if !known[k] {
					t.Fatalf("keychain %q has unknown key %q", kc.Name, k)
				}
			}
			chainKeys[kc.ID] = kc.Keys
		}
		grantsSeen, ownerOnly := 0, 0
		for _, r := range s.Roles {
			var granted []string
			for _, kc := range r.Keychains {
				granted = append(granted, chainKeys[kc]...)
			}
			grantsSeen += len(granted)
			for _, k := range r.OwnerOnly {
				if !slices.Contains(granted, k) {
					t.Fatalf("role %q: owner-only key %q not granted", r.Name, k)
				}
			}
			ownerOnly += len(r.OwnerOnly)
		}
		if grantsSeen != st.Grants || ownerOnly != st.OwnerOnly {
			t.Fatalf("roles grant %d keys (%d owner-only), Stats %+v", grantsSeen, ownerOnly, st)
		}
		again, st2, err := importWith(files, open)
		if err != nil || !reflect.DeepEqual(s, again) || st != st2 {
			t.Fatalf("a second import differs: %v", err)
		}
		_, _ = catalog.Resolve(s) // must not panic; an import may clash with the catalogue
	})
}
