package sidecar

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/internal/compiler"
)

// keyPair returns a PEM private key of the given type ("ec", "rsa", "secret") and its public half (the secret
// itself for HMAC).
func keyPair(t *testing.T, typ string) (private, public []byte) {
	t.Helper()
	var priv, pub any
	switch typ {
	case "secret":
		return []byte("a shared secret"), []byte("a shared secret")
	case "ec":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
}

// TestDefaultVerificationAlgMatchesTheSigner: for every key type keygate serve signs with, the sidecar's
// default verification algorithm for the public half is the algorithm the signer picked.
func TestDefaultVerificationAlgMatchesTheSigner(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"ec", "rsa", "secret"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			priv, pub := keyPair(t, typ)
			opts := compiler.Options{SigningKey: priv}
			if err := opts.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := DefaultVerificationAlg(pub); got != opts.SigningAlg {
				t.Errorf("DefaultVerificationAlg = %s, the signer uses %s", got, opts.SigningAlg)
			}
		})
	}
	if got := DefaultVerificationAlg([]byte("-----BEGIN EC PUBLIC KEY-----\nAA==\n-----END EC PUBLIC KEY-----\n")); got != "ES256" {
		t.Errorf("EC PUBLIC KEY block: %s, want ES256", got)
	}
}

// TestECSignedBundleActivatesWithoutAlgorithm is the regression test of the Kubernetes example: an EC
// verification key and no verification_alg (the sidecar used to default to RS256 and refuse every bundle).
func TestECSignedBundleActivatesWithoutAlgorithm(t *testing.T) {
	t.Parallel()
	priv, pub := keyPair(t, "ec")
	pubFile := filepath.Join(t.TempDir(), "verification-key.pem")
	if err := os.WriteFile(pubFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	b := build(t, demoModel(t, nil), priv)
	bs := newBundleServer(t, b.Data, b.Revision)
	s := startSidecar(t, Config{
		Bundle:   BundleConfig{URL: bs.URL + "/bundles/keygate.tar.gz", VerificationKey: pubFile},
		Identity: identityFile(newDevIdentity(t)),
	})
	waitFor(t, "the EC-signed bundle", s.Ready)
	if s.Revision() != b.Revision {
		t.Fatalf("revision %q, want %q", s.Revision(), b.Revision)
	}
}
