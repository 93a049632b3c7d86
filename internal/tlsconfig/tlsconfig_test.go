package tlsconfig

import (
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		s    Server
		want string
	}{
		{"plaintext", Server{}, ""},
		{"tls", Server{CertFile: "c", KeyFile: "k"}, ""},
		{"mutual tls", Server{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}, ""},
		{"key without cert", Server{KeyFile: "k"}, "cert_file"},
		{"cert without key", Server{CertFile: "c"}, "key_file"},
		{"client ca without tls", Server{ClientCAFile: "ca"}, "client_ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.s.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// serve accepts TLS connections on loopback with cfg and completes their handshakes.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1)) // report a handshake failure to the client, then wait for close
				_ = c.Close()
			}()
		}
	}()
	return lis.Addr().String()
}

func handshake(addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// With TLS 1.3 a refused client certificate surfaces on the first read.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		return nil, err
	}
	st := c.ConnectionState()
	return &st, nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestMutualTLSAndMinimumVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev, err := GenerateDev(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewDevCA(dir, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	strangerCert, strangerKey, err := other.Issue(dir, "stranger", true)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Server{CertFile: dev.ServerCert, KeyFile: dev.ServerKey, ClientCAFile: dev.CA}.Load(tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)

	client := func(t *testing.T, ca, cert, key string) *tls.Config {
		t.Helper()
		c, err := Client(ca, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("client certificate of the CA is accepted", func(t *testing.T) {
		t.Parallel()
		if _, err := handshake(addr, client(t, dev.CA, dev.ClientCert, dev.ClientKey)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no client certificate is refused", func(t *testing.T) {
		t.Parallel()
		if _, err := handshake(addr, client(t, dev.CA, "", "")); err == nil {
			t.Fatal("handshake without a client certificate succeeded")
		}
	})
	t.Run("client certificate of another CA is refused", func(t *testing.T) {
		t.Parallel()
		if _, err := handshake(addr, client(t, dev.CA, strangerCert, strangerKey)); err == nil {
			t.Fatal("handshake with a stranger's certificate succeeded")
		}
	})
	t.Run("server of another CA is not trusted", func(t *testing.T) {
		t.Parallel()
		if _, err := handshake(addr, client(t, other.CertFile, dev.ClientCert, dev.ClientKey)); err == nil {
			t.Fatal("client trusted a server its CA did not sign")
		}
	})
	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		t.Parallel()
		c := client(t, dev.CA, dev.ClientCert, dev.ClientKey)
		c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		if _, err := handshake(addr, c); err == nil {
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
	t.Run("TLS 1.2 is accepted", func(t *testing.T) {
		t.Parallel()
		c := client(t, dev.CA, dev.ClientCert, dev.ClientKey)
		c.MaxVersion = tls.VersionTLS12
		st, err := handshake(addr, c)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != tls.VersionTLS12 {
			t.Fatalf("version %x", st.Version)
		}
	})
}

func TestCertificateReloadsWhenItsFilesChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := NewDevCA(dir, "first-ca")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := first.Issue(dir, "server", false, LoopbackHosts...)
	if err != nil {
		t.Fatal(err)
	}
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.load(); err != nil {
		t.Fatal(err)
	}
	before, _ := kp.get(nil)

	second, err := NewDevCA(t.TempDir(), "second-ca")
	if err != nil {
		t.Fatal(err)
	}
	newDir := t.TempDir()
	c2, k2, err := second.Issue(newDir, "server", false, LoopbackHosts...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{c2, certFile}, {k2, keyFile}} {
		data, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Make the change visible even on filesystems with coarse timestamps.
	future := time.Now().Add(time.Minute)
	_ = os.Chtimes(certFile, future, future)
	kp.lastCheck = time.Time{}
	after, _ := kp.get(nil)
	if after == before {
		t.Fatal("certificate not reloaded after its files changed")
	}

	// A broken rotation keeps the last good certificate.
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	kp.lastCheck = time.Time{}
	if kept, _ := kp.get(nil); kept != after {
		t.Fatal("a broken key file replaced the served certificate")
	}
}
