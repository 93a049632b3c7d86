// Package policies embeds keygate's Rego policies (policies/keygate/...), the code half of every bundle.
package policies

import (
	"embed"
	"io/fs"
	"path"
	"sort"
	"strings"
)

//go:embed keygate
var files embed.FS

// File is one policy module: its path inside the bundle and its source.
type File struct {
	Path string
	Raw  []byte
}

// Modules returns the policy modules that go into a bundle, sorted by path: every .rego file under keygate/
// except tests (*_test.rego) and test fixtures (a fixture/ folder).
func Modules() ([]File, error) {
	var out []File
	err := fs.WalkDir(files, "keygate", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "fixture" || d.Name() == "testdata" {
				return fs.SkipDir
			}
			return nil
		}
		if path.Ext(p) != ".rego" || strings.HasSuffix(p, "_test.rego") {
			return nil
		}
		raw, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, File{Path: p, Raw: raw})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}
