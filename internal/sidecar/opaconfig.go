package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// opaKeys are the top-level keys of OPA's configuration keygate authz honours; any other key (discovery,
// plugins, server, ...) is refused rather than silently ignored.
var opaKeys = []string{"services", "labels", "keys", "bundles", "decision_logs", "status", "persistence_directory"}

// LoadConfig reads a configuration file in OPA's format (YAML or JSON: services, bundles, keys,
// decision_logs, status, labels, persistence_directory at the top level, keygate's own keys, the fields of
// Config, under keygate:) and applies --set overrides with OPA's semantics: ${VAR} is replaced by the
// environment variable VAR (left as is when VAR is unset) in the file and in each override, an override is
// key.path=value[,key.path=value...] (Helm's strvals syntax: a[0]=x indexes lists, {a,b} is a list, true, false,
// null and integers are typed, \ escapes , . = [ ]), and overrides win over the file, merging maps key by key.
// file may be "" (overrides only).
func LoadConfig(file string, sets []string) (Config, error) {
	doc := map[string]any{}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return Config{}, fmt.Errorf("reading the config file: %w", err)
		}
		if err := yaml.Unmarshal([]byte(subEnvVars(string(data))), &doc); err != nil {
			return Config{}, fmt.Errorf("parsing %s: %w", file, err)
		}
		if doc == nil {
			doc = map[string]any{}
		}
	}
	over := map[string]any{}
	for _, s := range sets {
		if err := parseSet(subEnvVars(s), over); err != nil {
			return Config{}, fmt.Errorf("--set %q: %w", s, err)
		}
	}
	return configFromDocument(mergeValues(doc, over))
}

// configFromDocument splits a merged document into keygate's section (decoded strictly into Config) and OPA's.
func configFromDocument(doc map[string]any) (Config, error) {
	var cfg Config
	if k, ok := doc["keygate"]; ok {
		delete(doc, "keygate")
		raw, err := yaml.Marshal(k)
		if err != nil {
			return cfg, fmt.Errorf("keygate: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("keygate: %w", err)
		}
	}
	if err := validateOPADocument(doc); err != nil {
		return cfg, err
	}
	if len(doc) > 0 {
		raw, err := json.Marshal(doc)
		if err != nil {
			return cfg, fmt.Errorf("encoding OPA's configuration: %w", err)
		}
		cfg.OPA = raw
	}
	return cfg, nil
}

// validateOPADocument refuses what keygate authz does not honour in OPA's configuration.
func validateOPADocument(doc map[string]any) error {
	for k := range doc {
		if !slices.Contains(opaKeys, k) {
			return fmt.Errorf("%s: not supported by keygate authz (OPA keys honoured: %s; keygate's own keys go under keygate:)",
				k, strings.Join(opaKeys, ", "))
		}
	}
	if b, ok := doc["bundles"]; ok {
		m, ok := b.(map[string]any)
		if !ok {
			return errors.New("bundles: not an object")
		}
		for name := range m {
			if name != bundleName {
				return fmt.Errorf("bundles.%s: keygate authz follows one bundle, named %q", name, bundleName)
			}
		}
	}
	if p, _ := sub(doc, "status")["prometheus"].(bool); p {
		return errors.New("status.prometheus: not supported (keygate's metrics are on /metrics, docs/metrics.md)")
	}
	return nil
}

// opaDocument decodes c.OPA (numbers kept exact).
func (c *Config) opaDocument() (map[string]any, error) {
	doc := map[string]any{}
	if len(c.OPA) == 0 {
		return doc, nil
	}
	dec := json.NewDecoder(bytes.NewReader(c.OPA))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("OPA configuration: %w", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	return doc, nil
}

// sub returns doc[k1][k2]... as an object, nil when absent or not an object.
func sub(doc map[string]any, keys ...string) map[string]any {
	cur := doc
	for _, k := range keys {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

// ensure returns doc[k] as an object, creating it (or replacing a non-object) when needed.
func ensure(doc map[string]any, k string) map[string]any {
	if m, ok := doc[k].(map[string]any); ok {
		return m
	}
	m := map[string]any{}
	doc[k] = m
	return m
}

// renderOPAConfig is the OPA configuration the plugin manager runs: c.OPA with keygate's bundle settings
// (bundle.url / bundle.file, token, CA and client certificate: bundleService; verification key, polling,
// persistence) rendered onto the bundle named keygate and its service, and keygate's defaults for what the configuration leaves unset
// (bundles.keygate.size_limit_bytes, polling, decision_logs.console).
func renderOPAConfig(c Config) ([]byte, error) {
	doc, err := c.opaDocument()
	if err != nil {
		return nil, err
	}
	b := c.Bundle
	bundles := ensure(doc, "bundles")
	src := ensure(bundles, bundleName)
	switch {
	case b.URL != "":
		u, err := url.Parse(b.URL)
		if err != nil {
			return nil, fmt.Errorf("bundle.url: %w", err)
		}
		if err := bundleService(ensure(ensure(doc, "services"), bundleName), u, b); err != nil {
			return nil, err
		}
		resource := u.EscapedPath()
		if u.RawQuery != "" {
			resource += "?" + u.RawQuery
		}
		src["service"] = bundleName
		src["resource"] = snapshotsOnly(b, resource)
	case b.File != "":
		abs, err := filepath.Abs(b.File)
		if err != nil {
			return nil, fmt.Errorf("bundle.file: %w", err)
		}
		delete(src, "service")
		delete(src, "polling")
		src["resource"] = "file://" + filepath.ToSlash(abs)
	}
	if _, ok := src["polling"]; !ok && src["service"] != nil {
		polling := map[string]any{
			"min_delay_seconds": int64(b.MinDelay / time.Second),
			"max_delay_seconds": int64(b.MaxDelay / time.Second),
		}
		if b.LongPollTimeout > 0 {
			polling["long_polling_timeout_seconds"] = int64(b.LongPollTimeout / time.Second)
		}
		src["polling"] = polling
	}
	if _, ok := src["size_limit_bytes"]; !ok {
		src["size_limit_bytes"] = int64(DefaultBundleSizeLimitBytes)
	}
	if b.PersistDir != "" && b.URL != "" {
		src["persist"] = true
		doc["persistence_directory"] = b.PersistDir
	}
	if b.VerificationKey != "" {
		key, err := os.ReadFile(b.VerificationKey)
		if err != nil {
			return nil, fmt.Errorf("bundle.verification_key: %w", err)
		}
		alg := b.VerificationAlg
		if alg == "" {
			alg = DefaultVerificationAlg(key)
		}
		ensure(doc, "keys")[b.VerificationKeyID] = map[string]any{"algorithm": alg, "key": string(key)}
		ensure(src, "signing")["keyid"] = b.VerificationKeyID
	}
	switch _, ok := doc["decision_logs"]; {
	case c.DecisionLogs.Disabled:
		delete(doc, "decision_logs")
	case !ok:
		doc["decision_logs"] = map[string]any{"console": true}
	}
	return json.Marshal(doc)
}

// envRegex matches ${VAR} as OPA's configuration loading does.
var envRegex = regexp.MustCompile(`(?U:\${.*})`)

// subEnvVars replaces ${VAR} by the environment variable VAR; an unset variable is left as is, as in OPA.
func subEnvVars(s string) string {
	return envRegex.ReplaceAllStringFunc(s, func(m string) string {
		if len(m) <= 3 {
			return ""
		}
		if v, ok := os.LookupEnv(m[2 : len(m)-1]); ok {
			return v
		}
		return m
	})
}

// mergeValues merges src into dest, src winning; maps present on both sides merge key by key.
func mergeValues(dest, src map[string]any) map[string]any {
	for k, v := range src {
		sm, sIsMap := v.(map[string]any)
		dm, dIsMap := dest[k].(map[string]any)
		if sIsMap && dIsMap {
			dest[k] = mergeValues(dm, sm)
			continue
		}
		dest[k] = v
	}
	return dest
}

// parseSet parses one --set argument, key.path=value[,key.path=value...], into dest (Helm's strvals syntax,
// which OPA uses: list indexes a[0]=x, lists {a,b}, typed scalars, \ escapes).
func parseSet(s string, dest map[string]any) error {
	p := &setParser{s: []rune(s)}
	for !p.done() {
		path, err := p.key()
		if err != nil {
			return err
		}
		val, err := p.value()
		if err != nil {
			return err
		}
		if err := setPath(dest, path, val); err != nil {
			return err
		}
	}
	return nil
}

// pathElem is a map key, or a list index when idx >= 0.
type pathElem struct {
	key string
	idx int
}

type setParser struct {
	s   []rune
	pos int
}

func (p *setParser) done() bool { return p.pos >= len(p.s) }

// key reads a.b[0].c up to '='.
func (p *setParser) key() ([]pathElem, error) {
	var path []pathElem
	var cur strings.Builder
	flush := func() error {
		if cur.Len() == 0 {
			return fmt.Errorf("empty key segment at %d", p.pos)
		}
		path = append(path, pathElem{key: cur.String(), idx: -1})
		cur.Reset()
		return nil
	}
	for !p.done() {
		r := p.s[p.pos]
		p.pos++
		switch r {
		case '\\':
			if p.done() {
				return nil, errors.New("trailing backslash")
			}
			cur.WriteRune(p.s[p.pos])
			p.pos++
		case '.':
			if cur.Len() == 0 && len(path) > 0 && path[len(path)-1].idx >= 0 {
				continue // a[0].b
			}
			if err := flush(); err != nil {
				return nil, err
			}
		case '[':
			if cur.Len() > 0 {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			if len(path) == 0 {
				return nil, errors.New("list index without a key")
			}
			end := p.pos
			for end < len(p.s) && p.s[end] != ']' {
				end++
			}
			if end == len(p.s) {
				return nil, errors.New("unterminated [")
			}
			n, err := strconv.Atoi(string(p.s[p.pos:end]))
			if err != nil || n < 0 || n > 65536 {
				return nil, fmt.Errorf("bad list index %q", string(p.s[p.pos:end]))
			}
			path = append(path, pathElem{idx: n})
			p.pos = end + 1
		case '=':
			if cur.Len() > 0 {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			if len(path) == 0 {
				return nil, errors.New("empty key")
			}
			return path, nil
		case ',':
			return nil, fmt.Errorf("key %q has no value", cur.String())
		default:
			cur.WriteRune(r)
		}
	}
	return nil, fmt.Errorf("key %q has no value (want key=value)", cur.String())
}

// value reads a scalar up to an unescaped ',' or a {a,b} list.
func (p *setParser) value() (any, error) {
	if !p.done() && p.s[p.pos] == '{' {
		p.pos++
		var list []any
		for {
			v, end, err := p.scalar("},")
			if err != nil {
				return nil, err
			}
			list = append(list, v)
			if end == '}' {
				break
			}
			if end == 0 {
				return nil, errors.New("unterminated {")
			}
		}
		if !p.done() {
			if p.s[p.pos] != ',' {
				return nil, fmt.Errorf("unexpected %q after a list", p.s[p.pos])
			}
			p.pos++
		}
		return list, nil
	}
	v, _, err := p.scalar(",")
	return v, err
}

// scalar reads up to one of stops (consumed; returned as end, 0 at the end of input).
func (p *setParser) scalar(stops string) (any, rune, error) {
	var b strings.Builder
	for !p.done() {
		r := p.s[p.pos]
		p.pos++
		if r == '\\' {
			if p.done() {
				return nil, 0, errors.New("trailing backslash")
			}
			b.WriteRune(p.s[p.pos])
			p.pos++
			continue
		}
		if strings.ContainsRune(stops, r) {
			return typed(b.String()), r, nil
		}
		b.WriteRune(r)
	}
	return typed(b.String()), 0, nil
}

// typed gives true, false, null and integers (without a leading zero) their type, as strvals does.
func typed(s string) any {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	case "0":
		return int64(0)
	}
	if !strings.HasPrefix(s, "0") {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	}
	return s
}

// setPath stores val at path in dest, creating maps and lists on the way.
func setPath(dest map[string]any, path []pathElem, val any) error {
	var set func(cur any, i int) (any, error)
	set = func(cur any, i int) (any, error) {
		if i == len(path) {
			return val, nil
		}
		e := path[i]
		if e.idx >= 0 {
			list, _ := cur.([]any)
			for len(list) <= e.idx {
				list = append(list, nil)
			}
			v, err := set(list[e.idx], i+1)
			if err != nil {
				return nil, err
			}
			list[e.idx] = v
			return list, nil
		}
		m, ok := cur.(map[string]any)
		if !ok {
			m = map[string]any{}
		}
		v, err := set(m[e.key], i+1)
		if err != nil {
			return nil, err
		}
		m[e.key] = v
		return m, nil
	}
	if path[0].idx >= 0 {
		return errors.New("a key must start with a name")
	}
	v, err := set(dest[path[0].key], 1)
	if err != nil {
		return err
	}
	dest[path[0].key] = v
	return nil
}
