package bundleserver

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/tlsconfig"
)

const (
	tokenA = "token-a-0123456789abcdef"
	tokenB = "token-b-fedcba9876543210" // the rotation's second token, from a file
)

// tlsClient is an HTTPS client trusting ca and presenting cert/key when set.
func tlsClient(t testing.TB, ca, cert, key string) *http.Client {
	t.Helper()
	cfg, err := tlsconfig.Client(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

// TestAuthentication runs a bundle server over TLS on loopback with two bearer tokens (one from a file)
// and a client CA, and asks it as strangers and as clients with credentials.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev, err := tlsconfig.GenerateDev(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.NewDevCA(dir, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	strangerCert, strangerKey, err := other.Issue(dir, "stranger", true)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokenFile, []byte("# rotation\n\n"+tokenB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, newSource(t), func(c *Config) {
		c.TLS = tlsconfig.Server{CertFile: dev.ServerCert, KeyFile: dev.ServerKey, ClientCAFile: dev.CA}
		c.Auth = AuthConfig{Tokens: []string{tokenA}, TokenFiles: []string{tokenFile}}
	})
	run(t, s)
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("URL %s is not https", s.URL())
	}
	anon := tlsClient(t, dev.CA, "", "")
	withCert := tlsClient(t, dev.CA, dev.ClientCert, dev.ClientKey)
	base := "https://" + s.Addr().String()
	waitReady(t, anon, base)

	cases := []struct {
		name   string
		client *http.Client
		path   string
		auth   string
		want   int
	}{
		{"no token", anon, BundlePath, "", http.StatusUnauthorized},
		{"wrong token", anon, BundlePath, "Bearer " + tokenA + "x", http.StatusUnauthorized},
		{"token prefix", anon, BundlePath, "Bearer " + tokenA[:10], http.StatusUnauthorized},
		{"garbage", anon, BundlePath, "Bearer garbage", http.StatusUnauthorized},
		{"basic scheme", anon, BundlePath, "Basic " + tokenA, http.StatusUnauthorized},
		{"empty bearer", anon, BundlePath, "Bearer ", http.StatusUnauthorized},
		{"metrics need auth", anon, "/metrics", "", http.StatusUnauthorized},
		{"unknown bundle needs auth", anon, "/bundles/other.tar.gz", "", http.StatusUnauthorized},
		{"health stays open", anon, "/health", "", http.StatusOK},
		{"right token", anon, BundlePath, "Bearer " + tokenA, http.StatusOK},
		{"rotated token from a file", anon, BundlePath, "Bearer " + tokenB, http.StatusOK},
		{"lower-case scheme", anon, BundlePath, "bearer " + tokenA, http.StatusOK},
		{"client certificate", withCert, BundlePath, "", http.StatusOK},
		{"client certificate and a wrong token", withCert, BundlePath, "Bearer garbage", http.StatusOK},
		{"metrics with a token", anon, "/metrics", "Bearer " + tokenB, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
			}
			if tc.want == http.StatusUnauthorized {
				if strings.Contains(string(body), "u-alice") || strings.Contains(string(body), "keygate_") || len(body) > 200 {
					t.Fatalf("401 carries data: %s", body)
				}
				if resp.Header.Get("WWW-Authenticate") == "" || resp.Header.Get("ETag") != "" {
					t.Fatalf("401 headers %v", resp.Header)
				}
			}
			if tc.want == http.StatusOK && tc.path == BundlePath && len(body) < 1000 {
				t.Fatalf("bundle of %d bytes", len(body))
			}
		})
	}

	t.Run("client certificate of another CA fails the handshake", func(t *testing.T) {
		t.Parallel()
		c := tlsClient(t, dev.CA, "", "")
		cert, err := tls.LoadX509KeyPair(strangerCert, strangerKey)
		if err != nil {
			t.Fatal(err)
		}
		// Sent although the server asks for another CA's certificates (Go's client would send none).
		c.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		}
		req, _ := http.NewRequest(http.MethodGet, base+BundlePath, nil)
		req.Header.Set("Authorization", "Bearer "+tokenA) // even with a good token
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("answered %d", resp.StatusCode)
		}
	})
	t.Run("plain HTTP gets no bundle", func(t *testing.T) {
		t.Parallel()
		resp, err := http.Get("http://" + s.Addr().String() + BundlePath)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plaintext request served")
		}
	})
}

func waitReady(t testing.TB, c *http.Client, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bundle server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPublicMetricsAndTokensWithoutTLS: tokens alone turn authentication on; PublicMetrics opens /metrics.
func TestPublicMetricsAndTokensWithoutTLS(t *testing.T) {
	t.Parallel()
	s := newServer(t, newSource(t), func(c *Config) {
		c.Auth = AuthConfig{Tokens: []string{tokenA}, PublicMetrics: true}
	})
	run(t, s)
	base := "http://" + s.Addr().String()
	waitReady(t, http.DefaultClient, base)
	if resp, _ := get(t, base+"/metrics", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if resp, body := get(t, s.URL(), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bundle without a token: %d %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := get(t, s.URL(), map[string]string{"Authorization": "Bearer " + tokenA}); resp.StatusCode != http.StatusOK {
		t.Fatalf("bundle with the token: %d", resp.StatusCode)
	}
}

func TestAuthConfigErrors(t *testing.T) {
	t.Parallel()
	src := func(context.Context) (model.Snapshot, error) { return model.Snapshot{}, nil }
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"short token", Config{Auth: AuthConfig{Tokens: []string{"short"}}}, "auth.tokens[0]: shorter than 16"},
		{"token with a space", Config{Auth: AuthConfig{Tokens: []string{"0123456789 abcdef"}}}, "white space"},
		{"missing token file", Config{Auth: AuthConfig{TokenFiles: []string{filepath.Join(dir, "nope")}}}, "auth.token_files"},
		{"empty token file", Config{Auth: AuthConfig{TokenFiles: []string{write("empty", "# none\n")}}}, "no token"},
		{"short token in a file", Config{Auth: AuthConfig{TokenFiles: []string{write("short", "abc\n")}}}, "line 1: shorter"},
		{"key without cert", Config{TLS: tlsconfig.Server{KeyFile: "k"}}, "tls.cert_file"},
		{"missing certificate", Config{TLS: tlsconfig.Server{CertFile: filepath.Join(dir, "c"), KeyFile: filepath.Join(dir, "k")}}, "tls:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Addr, tc.cfg.Source = "127.0.0.1:0", src
			s, err := New(tc.cfg, nil)
			if err == nil {
				_ = s.Close()
				t.Fatalf("New succeeded, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestTokenFileRotation: a token file edited in place is re-read (no restart); a file that stops parsing
// keeps its last good tokens.
func TestTokenFileRotation(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tokens")
	write := func(data string, at time.Time) {
		t.Helper()
		if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, at, at); err != nil { // visible even on coarse timestamps
			t.Fatal(err)
		}
	}
	write(tokenA+"\n", time.Now())
	s := newServer(t, newSource(t), func(c *Config) { c.Auth = AuthConfig{TokenFiles: []string{file}} })
	run(t, s)
	waitReady(t, http.DefaultClient, "http://"+s.Addr().String())
	status := func(tok string) int {
		t.Helper()
		s.auth.lastCheck.Store(0) // look at the file now
		resp, _ := get(t, s.URL(), map[string]string{"Authorization": "Bearer " + tok})
		return resp.StatusCode
	}
	if a, b := status(tokenA), status(tokenB); a != http.StatusOK || b != http.StatusUnauthorized {
		t.Fatalf("before the rotation: A %d, B %d", a, b)
	}
	write(tokenA+"\n"+tokenB+"\n", time.Now().Add(time.Minute))
	if a, b := status(tokenA), status(tokenB); a != http.StatusOK || b != http.StatusOK {
		t.Fatalf("during the rotation: A %d, B %d", a, b)
	}
	write(tokenB+"\n", time.Now().Add(2*time.Minute))
	if a, b := status(tokenA), status(tokenB); a != http.StatusUnauthorized || b != http.StatusOK {
		t.Fatalf("after the rotation: A %d, B %d", a, b)
	}
	write("short\n", time.Now().Add(3*time.Minute))
	if b := status(tokenB); b != http.StatusOK {
		t.Fatalf("a broken file dropped the last good token: B %d", b)
	}
}
