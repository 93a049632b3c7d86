// Package compiler turns a validated model into an OPA bundle: the policies plus one decision-shaped data
// document (docs/data-layout.md), a .manifest with the "keygate" root and a "POSITION-HASH" revision
// (internal/revision: the source's commit position and the content hash), and an
// optional signature that a stock opa verifies with --verification-key. The same model gives the same bytes.
package compiler

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/revision"
	"github.com/keygate/keygate/policies"
)

// Root is the bundle's only root; the data document lives at data.keygate.db.
const Root = "keygate"

// Options configure a build.
type Options struct {
	// SigningKey signs the bundle when set: a PEM private key (RSA or EC) or an HMAC secret.
	SigningKey []byte
	// SigningAlg is the JWS algorithm (RS256, ES256, HS256, ...). Default: RS256 for an RSA key, ES256 for an
	// EC key, HS256 for a secret.
	SigningAlg string
	// KeyID names the verification key in the signature; a verifying OPA must know a key by this id.
	// Default "keygate".
	KeyID string
	// Modules overrides the policies (tests); nil means the embedded policies.
	Modules []policies.File
	// Position is the source's commit position the data was read at (model.Snapshot.Position; 0 for a seed
	// file): the revision is revision.Format(Position, content hash).
	Position uint64
}

// Validate checks the options and fills in defaults.
func (o *Options) Validate() error {
	if o.KeyID == "" {
		o.KeyID = "keygate"
	}
	if len(o.SigningKey) == 0 {
		if o.SigningAlg != "" {
			return errors.New("signing_alg: set without a signing key")
		}
		return nil
	}
	block, _ := pem.Decode(o.SigningKey)
	if o.SigningAlg == "" {
		switch {
		case block == nil:
			o.SigningAlg = "HS256"
		case strings.Contains(block.Type, "EC"):
			o.SigningAlg = "ES256"
		default:
			o.SigningAlg = "RS256"
			if block.Type == "PRIVATE KEY" && isECPKCS8(block.Bytes) {
				o.SigningAlg = "ES256"
			}
		}
	}
	switch o.SigningAlg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512":
		if block == nil {
			return fmt.Errorf("signing_key: %s needs a PEM private key", o.SigningAlg)
		}
	case "HS256", "HS384", "HS512":
		if block != nil {
			return fmt.Errorf("signing_key: %s needs a shared secret, not a PEM key", o.SigningAlg)
		}
	default:
		return fmt.Errorf("signing_alg: unsupported algorithm %q", o.SigningAlg)
	}
	return nil
}

// Bundle is a built bundle.
type Bundle struct {
	Data     []byte // the .tar.gz
	Revision string
	Signed   bool
	// DataSize is the size of the uncompressed data document.
	DataSize int
	// Doc is the data document (data.keygate.db) as Data writes it: the input of Diff for delta bundles.
	Doc []byte
}

// Build compiles a model into a bundle.
func Build(m *model.Model, opts Options) (*Bundle, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("build options: %w", err)
	}
	mods := opts.Modules
	if mods == nil {
		var err error
		if mods, err = policies.Modules(); err != nil {
			return nil, fmt.Errorf("loading policies: %w", err)
		}
	}
	data := Data(m)
	rev := revision.Format(opts.Position, contentHash(data, mods))

	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: rev, Roots: &[]string{Root}},
		Data:     map[string]any{Root: map[string]any{"db": json.RawMessage(data)}},
	}
	b.Manifest.SetRegoVersion(ast.RegoV1)
	for _, f := range mods {
		p := "/" + strings.TrimPrefix(f.Path, "/")
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: p, Path: p, Raw: f.Raw})
	}
	if len(opts.SigningKey) > 0 {
		sc := bundle.NewSigningConfig(string(opts.SigningKey), opts.SigningAlg, "")
		if err := b.GenerateSignature(sc, opts.KeyID, false); err != nil {
			return nil, fmt.Errorf("signing bundle: %w", err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(b); err != nil {
		return nil, fmt.Errorf("writing bundle: %w", err)
	}
	return &Bundle{Data: buf.Bytes(), Revision: rev, Signed: len(opts.SigningKey) > 0, DataSize: len(data), Doc: data}, nil
}

// Data returns the canonical JSON of the model's data document (data.keygate.db).
func Data(m *model.Model) []byte {
	w := newJSONWriter()
	plan(m).write(w)
	return w.buf.Bytes()
}

// contentHash hashes the bundle's content: the data document and every policy module (path and source).
func contentHash(data []byte, mods []policies.File) string {
	h := sha256.New()
	h.Write(data)
	for _, f := range mods {
		h.Write([]byte{0})
		h.Write([]byte(f.Path))
		h.Write([]byte{0})
		h.Write(f.Raw)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// WriteFile writes a bundle atomically: to a temporary file beside path, then renamed over it, so a failed
// build never leaves a half-written bundle.
func WriteFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".keygate-bundle-*")
	if err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing bundle: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing bundle: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing bundle: %w", err)
	}
	return nil
}

func isECPKCS8(der []byte) bool {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return false
	}
	_, ok := k.(*ecdsa.PublicKey)
	if ok {
		return true
	}
	_, ok = k.(*ecdsa.PrivateKey)
	return ok
}
