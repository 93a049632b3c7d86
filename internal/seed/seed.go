// Package seed reads and writes keygate snapshot files (YAML or JSON), the embedded default and the test
// input. Parsing is strict: an unknown field is an error naming it.
package seed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/keygate/keygate/internal/model"
)

// Parse decodes a snapshot from YAML or JSON (JSON is YAML). name is used in error messages.
func Parse(name string, data []byte) (model.Snapshot, error) {
	var s model.Snapshot
	if len(bytes.TrimSpace(data)) == 0 {
		return s, nil
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return s, fmt.Errorf("%s: not valid YAML or JSON: %w", name, err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return s, nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%s: %w", name, describe(err))
	}
	return s, nil
}

// describe turns encoding/json's errors into messages naming the field.
func describe(err error) error {
	if te, ok := err.(*json.UnmarshalTypeError); ok {
		return fmt.Errorf("field %s: want %s, got JSON %s", te.Field, te.Type, te.Value)
	}
	return err
}

// ReadFile reads and parses a snapshot file.
func ReadFile(path string) (model.Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return model.Snapshot{}, fmt.Errorf("reading seed: %w", err)
	}
	return Parse(path, data)
}

// Marshal encodes a snapshot as YAML.
func Marshal(s model.Snapshot) ([]byte, error) {
	return yaml.Marshal(s)
}
