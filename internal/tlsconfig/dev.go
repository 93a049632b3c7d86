package tlsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DevCA is a throw-away certificate authority for development and tests (ECDSA P-256, one-year
// certificates). Never for production.
type DevCA struct {
	// CertFile is the CA certificate's PEM file: the file clients and servers trust.
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
}

// NewDevCA creates a CA named name and writes its certificate to dir/name.pem.
func NewDevCA(dir, name string) (*DevCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the %s key: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("signing the %s certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &DevCA{CertFile: filepath.Join(dir, name+".pem"), cert: cert, key: key}
	if err := writePEM(ca.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// Issue signs a certificate named name and writes dir/name.pem and dir/name-key.pem. A server
// certificate covers hosts (IP addresses or DNS names); a client certificate (client true) is for client
// authentication only.
func (ca *DevCA) Issue(dir, name string, client bool, hosts ...string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating the %s key: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("signing the %s certificate: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// LoopbackHosts are the names a development server certificate covers.
var LoopbackHosts = []string{"127.0.0.1", "::1", "localhost"}

// DevFiles are the files GenerateDev writes.
type DevFiles struct {
	CA                    string // dev-ca.pem
	ServerCert, ServerKey string // server.pem, server-key.pem (127.0.0.1, ::1, localhost)
	ClientCert, ClientKey string // client.pem, client-key.pem
}

// GenerateDev writes a development CA, a loopback server certificate and a client certificate into dir.
func GenerateDev(dir string) (DevFiles, error) {
	ca, err := NewDevCA(dir, "dev-ca")
	if err != nil {
		return DevFiles{}, err
	}
	f := DevFiles{CA: ca.CertFile}
	if f.ServerCert, f.ServerKey, err = ca.Issue(dir, "server", false, LoopbackHosts...); err != nil {
		return DevFiles{}, err
	}
	if f.ClientCert, f.ClientKey, err = ca.Issue(dir, "client", true); err != nil {
		return DevFiles{}, err
	}
	return f, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
