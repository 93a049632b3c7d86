package sidecar

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/tlsconfig"
)

// pki is a dev CA with server and client certificates, and a second CA that signed neither.
type pki struct {
	tlsconfig.DevFiles
	otherCA string
}

func newPKI(t testing.TB) pki {
	t.Helper()
	dir := t.TempDir()
	dev, err := tlsconfig.GenerateDev(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.NewDevCA(dir, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	return pki{DevFiles: dev, otherCA: other.CertFile}
}

func clientTLS(t testing.TB, ca, cert, key string) *tls.Config {
	t.Helper()
	c, err := tlsconfig.Client(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGRPCMutualTLS: with grpc_tls the ext_authz listener answers only clients presenting a certificate of
// the client CA (Envoy's); a client without one, with another CA's, or in plaintext gets no Check through.
func TestGRPCMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	dev := newDevIdentity(t)
	b := build(t, demoModel(t, nil), nil)
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := writeFile(path, b.Data); err != nil {
		t.Fatal(err)
	}
	s := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev),
		GRPCTLS: tlsconfig.Server{CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.CA}})
	waitFor(t, "the bundle", s.Ready)
	req := checkReq("GET", "/api/identity/orgs/org-layer5/teams", "identity",
		map[string]string{"authorization": "Bearer " + dev.token(t, "u-alice", "tok-alice", time.Hour)})

	check := func(t *testing.T, creds credentials.TransportCredentials) (*authv3.CheckResponse, error) {
		t.Helper()
		conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return authv3.NewAuthorizationClient(conn).Check(ctx, req)
	}
	t.Run("client certificate of the CA", func(t *testing.T) {
		t.Parallel()
		resp, err := check(t, credentials.NewTLS(clientTLS(t, p.CA, p.ClientCert, p.ClientKey)))
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("Check: %v %v", resp, err)
		}
	})
	for _, tc := range []struct {
		name  string
		creds func(t *testing.T) credentials.TransportCredentials
	}{
		{"no client certificate", func(t *testing.T) credentials.TransportCredentials {
			return credentials.NewTLS(clientTLS(t, p.CA, "", ""))
		}},
		{"server certificate as a client certificate", func(t *testing.T) credentials.TransportCredentials {
			return credentials.NewTLS(clientTLS(t, p.CA, p.ServerCert, p.ServerKey)) // not for client auth
		}},
		{"plaintext", func(*testing.T) credentials.TransportCredentials { return insecure.NewCredentials() }},
		{"server of an untrusted CA", func(t *testing.T) credentials.TransportCredentials {
			return credentials.NewTLS(clientTLS(t, p.otherCA, p.ClientCert, p.ClientKey))
		}},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			t.Parallel()
			if resp, err := check(t, tc.creds(t)); err == nil {
				t.Fatalf("Check answered: %v", resp)
			}
		})
	}
}

// TestHTTPTLS: http_tls serves the data API, /health and /metrics over TLS; with a client CA a client
// needs a certificate.
func TestHTTPTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	dev := newDevIdentity(t)
	b := build(t, demoModel(t, nil), nil)
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := writeFile(path, b.Data); err != nil {
		t.Fatal(err)
	}
	tlsOnly := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev),
		HTTPTLS: tlsconfig.Server{CertFile: p.ServerCert, KeyFile: p.ServerKey}})
	mutual := startSidecar(t, Config{Bundle: BundleConfig{File: path}, Identity: identityFile(dev),
		HTTPTLS: tlsconfig.Server{CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.CA}})
	waitFor(t, "the bundles", func() bool { return tlsOnly.Ready() && mutual.Ready() })

	get := func(c *tls.Config, url string) (int, error) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 5 * time.Second}
		resp, err := client.Get(url)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	for _, tc := range []struct {
		name string
		s    *Sidecar
		tls  *tls.Config
		ok   bool
	}{
		{"tls, trusted CA", tlsOnly, clientTLS(t, p.CA, "", ""), true},
		{"tls, untrusted CA", tlsOnly, clientTLS(t, p.otherCA, "", ""), false},
		{"mutual tls, client certificate", mutual, clientTLS(t, p.CA, p.ClientCert, p.ClientKey), true},
		{"mutual tls, no client certificate", mutual, clientTLS(t, p.CA, "", ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, err := get(tc.tls, "https://"+tc.s.HTTPAddr().String()+"/health?bundles")
			if tc.ok && (err != nil || code != http.StatusOK) {
				t.Fatalf("/health: %d %v", code, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("/health answered %d", code)
			}
		})
	}
	t.Run("plaintext request refused", func(t *testing.T) {
		t.Parallel()
		resp, err := http.Get("http://" + tlsOnly.HTTPAddr().String() + "/v1/data/keygate/authz/allow")
		if err == nil {
			defer resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("plaintext request answered 200")
			}
		}
	})
}

// secureBundleServer runs keygate's bundle server over TLS with a client CA and a bearer token.
func secureBundleServer(t testing.TB, p pki, token string, edit func(*model.Snapshot)) *bundleserver.Server {
	t.Helper()
	srv, err := bundleserver.New(bundleserver.Config{
		Addr: "127.0.0.1:0",
		TLS:  tlsconfig.Server{CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.CA},
		Auth: bundleserver.AuthConfig{Tokens: []string{token}},
		Source: func(context.Context) (model.Snapshot, error) {
			snap, err := catalog.DemoWithRoutes()
			if err == nil && edit != nil {
				edit(&snap)
			}
			return snap, err
		},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runBundleServer(t, srv)
	return srv
}

const bundleToken = "sidecar-token-0123456789"

// TestBundleDownloadOverMutualTLS: a sidecar downloads from a TLS bundle server that wants a token or a
// client certificate, with the CA, a client certificate and/or a token; without credentials it gets 401,
// and with the wrong CA it does not trust the server, so it stays without a bundle.
func TestBundleDownloadOverMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv := secureBundleServer(t, p, bundleToken, nil)
	dev := newDevIdentity(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(bundleToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		b     BundleConfig
		ready bool
		err   string // TriggerBundle's error when not ready
	}{
		{"CA, client certificate and token", BundleConfig{CACert: p.CA, ClientCert: p.ClientCert, ClientKey: p.ClientKey, Token: bundleToken}, true, ""},
		{"CA, client certificate and token file", BundleConfig{CACert: p.CA, ClientCert: p.ClientCert, ClientKey: p.ClientKey, TokenFile: tokenFile}, true, ""},
		{"CA and client certificate", BundleConfig{CACert: p.CA, ClientCert: p.ClientCert, ClientKey: p.ClientKey}, true, ""},
		{"CA and token", BundleConfig{CACert: p.CA, Token: bundleToken}, true, ""},
		{"CA and token file", BundleConfig{CACert: p.CA, TokenFile: tokenFile}, true, ""},
		{"CA and a wrong token", BundleConfig{CACert: p.CA, Token: "wrong-token-0123456789"}, false, "401"},
		{"CA only", BundleConfig{CACert: p.CA}, false, "401"},
		{"wrong CA", BundleConfig{CACert: p.otherCA, ClientCert: p.ClientCert, ClientKey: p.ClientKey, Token: bundleToken}, false, "certificate"},
		{"system roots", BundleConfig{Token: bundleToken}, false, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.b.URL = srv.URL()
			s := startSidecar(t, Config{Bundle: tc.b, Identity: identityFile(dev)})
			if tc.ready {
				waitFor(t, "the bundle", s.Ready)
				if s.Revision() != srv.Revision() {
					t.Fatalf("revision %q, server %q", s.Revision(), srv.Revision())
				}
				return
			}
			if got := downloadFailure(t, s); !strings.Contains(got, tc.err) {
				t.Fatalf("download failure %q, want %q", got, tc.err)
			}
			if s.Ready() {
				t.Fatal("ready without a good download")
			}
		})
	}
}

// TestWrongCAKeepsTheLastGoodBundle: a sidecar that downloaded (and persisted) a bundle, restarted with a
// CA that does not sign the server's certificate, keeps answering from its last good bundle and never
// takes the untrusted server's newer one.
func TestWrongCAKeepsTheLastGoodBundle(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv := secureBundleServer(t, p, bundleToken, nil)
	dev := newDevIdentity(t)
	persist := t.TempDir()
	good := BundleConfig{URL: srv.URL(), CACert: p.CA, ClientCert: p.ClientCert, ClientKey: p.ClientKey,
		Token: bundleToken, PersistDir: persist}

	ctx, cancel := context.WithCancel(context.Background())
	first, err := New(ctx, Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Bundle: withSlowPolls(good),
		Identity: identityFile(dev)}, testLogger(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Serve(ctx) }()
	waitFor(t, "the first bundle", first.Ready)
	lastGood := first.Revision()
	waitFor(t, "the persisted bundle", func() bool { return hasFile(persist) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	bad := good
	bad.CACert = p.otherCA
	s := startSidecar(t, Config{Bundle: bad, Identity: identityFile(dev)})
	waitFor(t, "the persisted bundle", s.Ready)
	if got := downloadFailure(t, s); !strings.Contains(got, "certificate") {
		t.Fatalf("download with the wrong CA: %q", got)
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer tcancel()
	if !s.Ready() || s.Revision() != lastGood {
		t.Fatalf("ready %v revision %q, want the last good %q", s.Ready(), s.Revision(), lastGood)
	}
	v, _, _, err := s.evalPath(tctx, "data.keygate.authz.allow", ast.MustParseTerm(
		`{"user":"u-alice","org":"org-layer5","key":"View All Users"}`).Value)
	if err != nil || v != true {
		t.Fatalf("decision on the last good bundle: %v %v", v, err)
	}
}

// downloadFailure waits for the bundle plugin's next failed download (its periodic loop retries a failure
// within a second or two) and returns the failure (message and HTTP code). It does not trigger a download
// itself: OPA's manual Trigger races with a periodic downloader's retry loop.
func downloadFailure(t testing.TB, s *Sidecar) string {
	t.Helper()
	statuses := make(chan bundleplugin.Status, 16)
	s.engine.plugin.Register("test-status", func(st bundleplugin.Status) {
		select {
		case statuses <- st:
		default:
		}
	})
	defer s.engine.plugin.Unregister("test-status")
	timeout := time.After(20 * time.Second)
	for {
		select {
		case st := <-statuses:
			if st.Code != "" {
				return st.Message + " http_code=" + string(st.HTTPCode)
			}
		case <-timeout:
			t.Fatal("no failed download within 20s")
			return ""
		}
	}
}

func withSlowPolls(b BundleConfig) BundleConfig {
	b.MinDelay, b.MaxDelay = time.Hour, time.Hour
	return b
}

func hasFile(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found = true
		}
		return nil
	})
	return found
}

func TestTLSConfigValidate(t *testing.T) {
	t.Parallel()
	base := func() Config {
		return Config{Bundle: BundleConfig{URL: "https://bundles.example/bundles/keygate.tar.gz"}, IdentityFromMetadata: true}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"valid", func(*Config) {}, ""},
		{"every option", func(c *Config) {
			c.GRPCTLS = tlsconfig.Server{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}
			c.HTTPTLS = tlsconfig.Server{CertFile: "c", KeyFile: "k"}
			c.Bundle.CACert, c.Bundle.ClientCert, c.Bundle.ClientKey, c.Bundle.TokenFile = "ca", "c", "k", "t"
		}, ""},
		{"grpc tls without a client ca", func(c *Config) { c.GRPCTLS = tlsconfig.Server{CertFile: "c", KeyFile: "k"} }, "grpc_tls.client_ca_file"},
		{"grpc client ca without a certificate", func(c *Config) { c.GRPCTLS = tlsconfig.Server{ClientCAFile: "ca"} }, "grpc_tls.client_ca_file"},
		{"http key without a certificate", func(c *Config) { c.HTTPTLS = tlsconfig.Server{KeyFile: "k"} }, "http_tls.cert_file"},
		{"token and token file", func(c *Config) { c.Bundle.Token, c.Bundle.TokenFile = "t", "f" }, "bundle.token and bundle.token_file"},
		{"client cert without key", func(c *Config) { c.Bundle.ClientCert = "c" }, "bundle.client_cert and bundle.client_key"},
		{"ca cert on http", func(c *Config) { c.Bundle.URL = "http://b/x"; c.Bundle.CACert = "ca" }, "bundle.ca_cert: needs an https"},
		{"client cert on http", func(c *Config) {
			c.Bundle.URL = "http://b/x"
			c.Bundle.ClientCert, c.Bundle.ClientKey = "c", "k"
		}, "bundle.client_cert: needs an https"},
		{"token with a file bundle", func(c *Config) { c.Bundle = BundleConfig{File: "b.tar.gz", Token: "t"} }, "only with bundle.url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := base()
			tc.edit(&c)
			c.SetDefaults()
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestBundleServiceConfig: the OPA service keys the bundle options map to (plugins/rest.Config).
func TestBundleServiceConfig(t *testing.T) {
	t.Parallel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(" from-file \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		start string // the OPA-format configuration's services.keygate
		b     BundleConfig
		want  string
	}{
		{"plain", "", BundleConfig{}, `{"url":"https://b:8282"}`},
		{"the configuration's credentials stand", `{"credentials":{"bearer":{"token_path":"/t"}},"tls":{"system_ca_required":true}}`,
			BundleConfig{CACert: "ca.pem"},
			`{"credentials":{"bearer":{"token_path":"/t"}},"tls":{"ca_cert":"ca.pem","system_ca_required":true},"url":"https://b:8282"}`},
		{"token", "", BundleConfig{Token: "tok"}, `{"credentials":{"bearer":{"token":"tok"}},"url":"https://b:8282"}`},
		{"token file", "", BundleConfig{TokenFile: tokenFile}, `{"credentials":{"bearer":{"token_path":"` + tokenFile + `"}},"url":"https://b:8282"}`},
		{"ca and client certificate", "", BundleConfig{CACert: "ca.pem", ClientCert: "c.pem", ClientKey: "k.pem"},
			`{"credentials":{"client_tls":{"cert":"c.pem","private_key":"k.pem"}},"tls":{"ca_cert":"ca.pem"},"url":"https://b:8282"}`},
		{"client certificate and token file", "", BundleConfig{ClientCert: "c.pem", ClientKey: "k.pem", TokenFile: tokenFile},
			`{"credentials":{"client_tls":{"cert":"c.pem","private_key":"k.pem"}},"headers":{"Authorization":"Bearer from-file"},"url":"https://b:8282"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, _ := url.Parse("https://b:8282/bundles/keygate.tar.gz")
			svc := map[string]any{}
			if tc.start != "" {
				if err := json.Unmarshal([]byte(tc.start), &svc); err != nil {
					t.Fatal(err)
				}
			}
			if err := bundleService(svc, u, tc.b); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(svc)
			if string(got) != tc.want {
				t.Fatalf("service %s\nwant    %s", got, tc.want)
			}
		})
	}
}
