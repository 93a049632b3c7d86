// Package tlsconfig builds the TLS configurations of keygate's listeners from PEM files: a server
// certificate and key (re-read when the files change, so a rotated certificate is served without a
// restart), an optional client CA for mutual TLS, TLS 1.2 at least and Go's default cipher suites.
package tlsconfig

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// MinVersion is the lowest TLS version keygate's listeners and clients accept.
const MinVersion = tls.VersionTLS12

// reloadCheck is how often (at most) a handshake looks at the certificate files' modification times.
const reloadCheck = 5 * time.Second

// Server configures a TLS listener. The zero value is a plaintext listener.
type Server struct {
	// CertFile is the PEM certificate chain (leaf first). Set with KeyFile to serve TLS.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `yaml:"key_file"`
	// ClientCAFile is a PEM bundle of CAs that sign client certificates (mutual TLS). Needs CertFile.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether TLS is configured.
func (s Server) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" }

// MutualTLS reports whether client certificates are checked.
func (s Server) MutualTLS() bool { return s.ClientCAFile != "" }

// Validate checks that the fields are set together. The files themselves are read by Load.
func (s Server) Validate() error {
	switch {
	case s.CertFile == "" && s.KeyFile != "":
		return errors.New("cert_file: required with key_file")
	case s.CertFile != "" && s.KeyFile == "":
		return errors.New("key_file: required with cert_file")
	case s.ClientCAFile != "" && !s.Enabled():
		return errors.New("client_ca_file: needs cert_file and key_file (mutual TLS is TLS)")
	}
	return nil
}

// Load reads the files and returns the listener's tls.Config (nil, nil when TLS is not enabled). With a
// client CA, clientAuth says how client certificates are asked for (tls.RequireAndVerifyClientCert, or
// tls.VerifyClientCertIfGiven when the application authenticates certificate-less clients another way).
func (s Server) Load(clientAuth tls.ClientAuthType) (*tls.Config, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if !s.Enabled() {
		return nil, nil
	}
	kp := &keyPair{certFile: s.CertFile, keyFile: s.KeyFile}
	if err := kp.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: MinVersion, GetCertificate: kp.get}
	if s.ClientCAFile != "" {
		pool, err := LoadCAs(s.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client_ca_file: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = clientAuth
	}
	return cfg, nil
}

// LoadCAs reads a PEM bundle of CA certificates into a pool.
func LoadCAs(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

// Client returns a client tls.Config trusting caFile (the system roots when empty) and presenting the
// certificate in certFile/keyFile when they are set.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: MinVersion}
	if caFile != "" {
		pool, err := LoadCAs(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// keyPair serves a certificate, re-reading its files when their modification time or size changes. A
// rotation that leaves an unreadable or mismatched pair keeps the previous certificate.
type keyPair struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     []byte // modification times and sizes of both files at the last load
	lastCheck time.Time
}

func fileStamp(files ...string) ([]byte, error) {
	var b bytes.Buffer
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return b.Bytes(), nil
}

func (k *keyPair) load() error {
	stamp, err := fileStamp(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("cert_file/key_file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("cert_file/key_file: %w", err)
	}
	k.cert, k.stamp = &cert, stamp
	return nil
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := time.Now(); now.Sub(k.lastCheck) >= reloadCheck {
		k.lastCheck = now
		if stamp, err := fileStamp(k.certFile, k.keyFile); err == nil && !bytes.Equal(stamp, k.stamp) {
			_ = k.load() // on failure the previous certificate stays served; the next check retries
		}
	}
	return k.cert, nil
}
