package sidecar

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
)

// DefaultVerificationAlg is the bundle verification algorithm used when none is configured: the one keygate
// serve signs with for the matching private key (compiler.Options), so a key pair needs no algorithm flag on
// either side. A PEM EC public key (PKIX, "EC PUBLIC KEY" or a certificate) gives ES256, any other PEM key
// RS256, and a file that is not PEM (an HMAC secret) HS256.
func DefaultVerificationAlg(key []byte) string {
	block, _ := pem.Decode(key)
	if block == nil {
		return "HS256"
	}
	var pub any
	switch block.Type {
	case "EC PUBLIC KEY", "EC PRIVATE KEY":
		return "ES256"
	case "PUBLIC KEY":
		pub, _ = x509.ParsePKIXPublicKey(block.Bytes)
	case "CERTIFICATE":
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	case "PRIVATE KEY":
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			pub = k
		}
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *ecdsa.PrivateKey:
		return "ES256"
	case *rsa.PublicKey, *rsa.PrivateKey:
		return "RS256"
	}
	return "RS256"
}
