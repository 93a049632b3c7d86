package compiler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// DataPath is the storage path of the data document (data.keygate.db) in a patch operation.
const DataPath = "/" + Root + "/db"

// Diff returns the patch operations that turn the data document old into new (both data.keygate.db, as
// Data writes them), with paths under DataPath in OPA's escaping ("~0", "~1", then URL path escaping).
//
// The walk descends only into objects whose bytes differ, merging their members by key (Data writes keys
// sorted; unsorted input is sorted first), so it costs time proportional to the documents and allocates
// only for the objects on the way to a change. An object in both documents gives "remove" for a member only
// in old, "upsert" for a member only in new or whose value is not an object on both sides, and recurses
// otherwise; when a changed object's operations would weigh more than the object itself, it is upserted
// whole. Arrays are values: a changed array is upserted whole. Equal documents give no operations.
func Diff(old, new []byte) ([]bundle.PatchOperation, error) {
	var d differ
	if err := d.walk(DataPath, bytes.TrimSpace(old), bytes.TrimSpace(new)); err != nil {
		return nil, fmt.Errorf("diffing the data documents: %w", err)
	}
	return d.ops, nil
}

// DeltaBundle writes an OPA delta bundle (.manifest with revision, the keygate root and the Rego version of
// the snapshot bundles; patch.json with ops) as a .tar.gz. An empty ops is given one operation that changes
// nothing (the document's smallest top-level member upserted with its own value, or the document itself when
// it has no member): OPA reads a bundle without patch operations as a snapshot, and an empty snapshot would
// erase the policies. doc is the data document the operations lead to (new of Diff).
func DeltaBundle(revision string, ops []bundle.PatchOperation, doc []byte) ([]byte, error) {
	if len(ops) == 0 {
		op, err := noop(bytes.TrimSpace(doc))
		if err != nil {
			return nil, fmt.Errorf("writing delta bundle: %w", err)
		}
		ops = []bundle.PatchOperation{op}
	}
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision, Roots: &[]string{Root}},
		Patch:    bundle.Patch{Data: ops},
	}
	b.Manifest.SetRegoVersion(ast.RegoV1)
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(b); err != nil {
		return nil, fmt.Errorf("writing delta bundle: %w", err)
	}
	return buf.Bytes(), nil
}

func noop(doc []byte) (bundle.PatchOperation, error) {
	whole := bundle.PatchOperation{Op: "upsert", Path: DataPath, Value: json.RawMessage(doc)}
	if len(doc) == 0 || doc[0] != '{' {
		if !json.Valid(doc) {
			return bundle.PatchOperation{}, errors.New("data document is not JSON")
		}
		return whole, nil
	}
	ms, err := members(doc)
	if err != nil {
		return bundle.PatchOperation{}, err
	}
	best := -1
	for i, m := range ms {
		if m.key != "" && (best < 0 || len(m.val) < len(ms[best].val)) {
			best = i
		}
	}
	if best < 0 {
		return whole, nil
	}
	return bundle.PatchOperation{Op: "upsert", Path: DataPath + "/" + EscapePathSegment(ms[best].key),
		Value: json.RawMessage(ms[best].val)}, nil
}

// EscapePathSegment escapes one key of a patch path the way OPA's bundle activation unescapes it (URL path
// unescaping, then "~1" to "/" and "~0" to "~").
func EscapePathSegment(key string) string {
	if strings.ContainsAny(key, "~/") {
		key = strings.ReplaceAll(key, "~", "~0")
		key = strings.ReplaceAll(key, "/", "~1")
	}
	return url.PathEscape(key)
}

// opOverhead approximates the JSON of one operation beside its path and value.
const opOverhead = len(`{"op":"upsert","path":"","value":},`)

type differ struct {
	ops  []bundle.PatchOperation
	size int // approximate encoded size of ops
}

func (d *differ) add(op string, path string, val []byte) {
	o := bundle.PatchOperation{Op: op, Path: path}
	if val != nil {
		o.Value = json.RawMessage(val)
	}
	d.ops = append(d.ops, o)
	d.size += opOverhead + len(path) + len(val)
}

func (d *differ) walk(path string, a, b []byte) error {
	if bytes.Equal(a, b) {
		return nil
	}
	if len(a) == 0 || len(b) == 0 || a[0] != '{' || b[0] != '{' {
		if !json.Valid(b) {
			return fmt.Errorf("%s: new value is not JSON", path)
		}
		d.add("upsert", path, b)
		return nil
	}
	am, err := members(a)
	if err != nil {
		return fmt.Errorf("%s: old: %w", path, err)
	}
	bm, err := members(b)
	if err != nil {
		return fmt.Errorf("%s: new: %w", path, err)
	}
	start, startSize := len(d.ops), d.size
	emptyKey := false
	i, j := 0, 0
	for i < len(am) || j < len(bm) {
		switch {
		case j == len(bm) || i < len(am) && am[i].key < bm[j].key:
			emptyKey = emptyKey || am[i].key == ""
			d.add("remove", path+"/"+EscapePathSegment(am[i].key), nil)
			i++
		case i == len(am) || bm[j].key < am[i].key:
			emptyKey = emptyKey || bm[j].key == ""
			d.add("upsert", path+"/"+EscapePathSegment(bm[j].key), bm[j].val)
			j++
		default:
			if !bytes.Equal(am[i].val, bm[j].val) {
				emptyKey = emptyKey || am[i].key == ""
				if err := d.walk(path+"/"+EscapePathSegment(bm[j].key), am[i].val, bm[j].val); err != nil {
					return err
				}
			}
			i++
			j++
		}
	}
	// OPA trims a path's trailing "/", so an empty key at the end cannot be addressed: upsert the object.
	if emptyKey || d.size-startSize > opOverhead+len(path)+len(b) {
		d.ops, d.size = d.ops[:start], startSize
		d.add("upsert", path, b)
	}
	return nil
}

// member is one member of a JSON object: its key, decoded, and its raw value.
type member struct {
	key string
	val []byte
}

// members lists the members of the JSON object obj, sorted by key (the last of duplicate keys wins, as in
// encoding/json).
func members(obj []byte) ([]member, error) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil, errors.New("not an object")
	}
	var ms []member
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return ms, checkEnd(obj, i+1)
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return nil, fmt.Errorf("offset %d: want an object key", i)
		}
		end, err := skipString(obj, i)
		if err != nil {
			return nil, err
		}
		key, err := decodeKey(obj[i:end])
		if err != nil {
			return nil, err
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return nil, fmt.Errorf("offset %d: want ':'", i)
		}
		i = skipSpace(obj, i+1)
		vend, err := skipValue(obj, i)
		if err != nil {
			return nil, err
		}
		ms = append(ms, member{key: key, val: obj[i:vend]})
		i = skipSpace(obj, vend)
		if i >= len(obj) {
			return nil, errors.New("unterminated object")
		}
		if obj[i] == '}' {
			if err := checkEnd(obj, i+1); err != nil {
				return nil, err
			}
			break
		}
		if obj[i] != ',' {
			return nil, fmt.Errorf("offset %d: want ',' or '}'", i)
		}
		i = skipSpace(obj, i+1)
	}
	if !sort.SliceIsSorted(ms, func(x, y int) bool { return ms[x].key < ms[y].key }) {
		sort.SliceStable(ms, func(x, y int) bool { return ms[x].key < ms[y].key })
	}
	// Duplicate keys: keep the last.
	out := ms[:0]
	for k, m := range ms {
		if k+1 < len(ms) && ms[k+1].key == m.key {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

func checkEnd(b []byte, i int) error {
	if skipSpace(b, i) != len(b) {
		return fmt.Errorf("offset %d: data after the object", i)
	}
	return nil
}

func decodeKey(raw []byte) (string, error) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("object key %s: %w", raw, err)
	}
	return s, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset after the JSON string starting at b[i] ('"').
func skipString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// skipValue returns the offset after the JSON value starting at b[i]. Containers are matched by depth;
// scalars are not validated (the values the walk keeps are checked when the patch is written).
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing value")
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, errors.New("unterminated container")
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' &&
			b[j] != '\t' && b[j] != '\r' {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("offset %d: missing value", i)
		}
		return j, nil
	}
}
