package compiler

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"sort"
)

// jsonWriter writes canonical JSON (compact, HTML not escaped) into a buffer. Callers write object keys in
// sorted order; the writer only tracks commas.
type jsonWriter struct {
	buf   bytes.Buffer
	first []bool // per open container: no element written yet
	enc   *json.Encoder
	tmp   bytes.Buffer
}

func newJSONWriter() *jsonWriter {
	w := &jsonWriter{}
	w.enc = json.NewEncoder(&w.tmp)
	w.enc.SetEscapeHTML(false)
	return w
}

func (w *jsonWriter) sep() {
	if n := len(w.first); n > 0 {
		if !w.first[n-1] {
			w.buf.WriteByte(',')
		}
		w.first[n-1] = false
	}
}

func (w *jsonWriter) open()     { w.buf.WriteByte('{'); w.first = append(w.first, true) }
func (w *jsonWriter) close()    { w.buf.WriteByte('}'); w.first = w.first[:len(w.first)-1] }
func (w *jsonWriter) arr()      { w.buf.WriteByte('['); w.first = append(w.first, true) }
func (w *jsonWriter) closeArr() { w.buf.WriteByte(']'); w.first = w.first[:len(w.first)-1] }

// key writes an object key (and the comma before it).
func (w *jsonWriter) key(k string) {
	w.sep()
	w.str(k)
	w.buf.WriteByte(':')
}

// elem starts an array element.
func (w *jsonWriter) elem() { w.sep() }

func (w *jsonWriter) raw(s string) { w.buf.WriteString(s) }

func (w *jsonWriter) field(k, v string) {
	w.key(k)
	w.str(v)
}

// str writes a JSON string exactly as encoding/json does with HTML escaping off.
func (w *jsonWriter) str(s string) {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			plain = false
			break
		}
	}
	if plain {
		w.buf.WriteByte('"')
		w.buf.WriteString(s)
		w.buf.WriteByte('"')
		return
	}
	w.tmp.Reset()
	_ = w.enc.Encode(s)
	w.buf.Write(bytes.TrimSuffix(w.tmp.Bytes(), []byte{'\n'}))
}

// set writes {"a": true, ...} for sorted ids.
func (w *jsonWriter) set(ids []string) {
	w.open()
	for _, id := range ids {
		w.key(id)
		w.buf.WriteString("true")
	}
	w.close()
}

// list writes ["a", ...].
func (w *jsonWriter) list(ids []string) {
	w.arr()
	for _, id := range ids {
		w.elem()
		w.str(id)
	}
	w.closeArr()
}

// keyFlags writes {"key": 0|1} (1 = owner-only).
func (w *jsonWriter) keyFlags(keys map[string]bool) {
	w.open()
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		w.key(k)
		if keys[k] {
			w.buf.WriteByte('1')
		} else {
			w.buf.WriteByte('0')
		}
	}
	w.close()
}

// rolesetMap writes {"user": "<role set id>"} (name: layout.rolesetName).
func (w *jsonWriter) rolesetMap(m map[string]int, name func(int) string) {
	users := make([]string, 0, len(m))
	for u := range m {
		users = append(users, u)
	}
	sort.Strings(users)
	w.open()
	for _, u := range users {
		w.key(u)
		w.str(name(m[u]))
	}
	w.close()
}
