package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/sidecar"
	"github.com/keygate/keygate/internal/tlsconfig"
)

func init() { register(newDevCmd) }

// Files keygate dev writes besides identity's dev JWT key and JWKS.
const (
	devBundleKeyFile    = "bundle-signing-key.pem"
	devBundleVerifyFile = "bundle-verification-key.pem"
	devBundleTokenFile  = "bundle-token"
)

// devOptions configure keygate dev.
type devOptions struct {
	bundleAddr, grpcAddr, httpAddr string
	dir                            string
	readyTimeout                   time.Duration
	tokenTTL                       time.Duration
}

func newDevCmd(e *env) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev [--grpc-addr HOST:PORT] [--http-addr HOST:PORT] [--addr HOST:PORT]",
		Short: "Run the bundle server and the sidecar in one process on the embedded demo (development)",
		Long: `Generate a bundle signing key, a dev JWT key pair, a dev CA with server and client certificates and a
bundle server token into a temporary directory, serve the embedded demo (with the identity API routes) as a
signed bundle over TLS to clients with the token or the client certificate, run the sidecar on it (downloading
with the CA, the client certificate and the token, verifying the bundle's signature and the bearer JWTs against
the dev JWKS, its HTTP side over TLS), and print ready-to-paste grpcurl and curl examples with demo tokens.
The directory is removed on exit unless --dir names one. Development only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), e, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.bundleAddr, "addr", bundleserver.DefaultAddr, "bundle server listener host:port")
	f.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:9191", "sidecar ext_authz gRPC listener")
	f.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8181", "sidecar data API / health / metrics listener")
	f.StringVar(&o.dir, "dir", "", "write the dev keys here (kept) instead of a temporary directory (removed on exit)")
	f.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "give up when the sidecar has no bundle after this long")
	f.DurationVar(&o.tokenTTL, "token-ttl", 24*time.Hour, "lifetime of the demo tokens in the printed examples")
	return cmd
}

// runDev runs keygate dev until ctx ends.
func runDev(ctx context.Context, e *env, o devOptions) (err error) {
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "keygate-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	bundleKey, verifyFile, err := writeBundleKeys(dir)
	if err != nil {
		return err
	}
	jwtKeyFile, jwksFile, err := identity.GenerateDevKey(dir)
	if err != nil {
		return err
	}
	pki, err := tlsconfig.GenerateDev(dir)
	if err != nil {
		return err
	}
	tokenFile, err := writeBundleToken(dir)
	if err != nil {
		return err
	}

	// The secure setup: the bundle server over TLS wants the bearer token or the client certificate; the
	// sidecar checks its certificate against the dev CA and presents both.
	srv, err := bundleserver.New(bundleserver.Config{
		Addr:   o.bundleAddr,
		TLS:    tlsconfig.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CA},
		Auth:   bundleserver.AuthConfig{TokenFiles: []string{tokenFile}},
		Build:  compiler.Options{SigningKey: bundleKey},
		Source: func(context.Context) (model.Snapshot, error) { return catalog.DemoWithRoutes() },
	}, e.logger.With("component", "bundleserver"))
	if err != nil {
		return usageErr("--addr: %v", err)
	}
	// The sidecar stops first, then the bundle server it polls (no connection-refused noise on Ctrl-C).
	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	scCtx, stopSC := context.WithCancel(srvCtx)
	defer stopSC()
	sc, err := sidecar.New(scCtx, sidecar.Config{
		GRPCAddr: o.grpcAddr,
		HTTPAddr: o.httpAddr,
		HTTPTLS:  tlsconfig.Server{CertFile: pki.ServerCert, KeyFile: pki.ServerKey},
		Bundle: sidecar.BundleConfig{
			URL:             srv.URL(),
			CACert:          pki.CA,
			ClientCert:      pki.ClientCert,
			ClientKey:       pki.ClientKey,
			TokenFile:       tokenFile,
			VerificationKey: verifyFile,
			MinDelay:        time.Second,
			MaxDelay:        2 * time.Second,
			LongPollTimeout: 30 * time.Second,
		},
		Identity: identity.Config{JWKSFile: jwksFile},
	}, e.logger.With("component", "sidecar"))
	if err != nil {
		_ = srv.Close()
		return err
	}

	srvDone, scDone := make(chan error, 1), make(chan error, 1)
	go func() { srvDone <- srv.Run(srvCtx) }()
	go func() { scDone <- sc.Serve(scCtx) }()
	// Whatever happens, stop both and report the first error.
	defer func() {
		stopSC()
		scErr := <-scDone
		stopSrv()
		err = errors.Join(err, scErr, <-srvDone)
		if err == nil && ctx.Err() != nil {
			e.logger.Info("keygate dev stopped")
		}
	}()

	ready := time.NewTicker(20 * time.Millisecond)
	defer ready.Stop()
	deadline := time.After(o.readyTimeout)
	for !sc.Ready() {
		select {
		case <-ctx.Done():
			return nil
		case err := <-srvDone:
			srvDone <- err
			return errors.New("bundle server stopped before the sidecar was ready")
		case err := <-scDone:
			scDone <- err
			return errors.New("sidecar stopped before it was ready")
		case <-deadline:
			return fmt.Errorf("no bundle active after %s: %v", o.readyTimeout, srv.LastError())
		case <-ready.C:
		}
	}
	key, err := identity.LoadSigningKey(jwtKeyFile)
	if err != nil {
		return err
	}
	if err := printDevExamples(e.stdout, devInfo{
		dir: dir, kept: o.dir != "", bundleURL: srv.URL(), revision: sc.Revision(),
		grpcAddr: sc.GRPCAddr().String(), httpAddr: sc.HTTPAddr().String(),
		bundleKey: filepath.Join(dir, devBundleKeyFile), verifyKey: verifyFile, jwtKey: jwtKeyFile, jwks: jwksFile,
		pki: pki, bundleToken: tokenFile,
	}, key, o.tokenTTL); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-srvDone:
		srvDone <- err
		return errors.New("bundle server stopped")
	case err := <-scDone:
		scDone <- err
		return errors.New("sidecar stopped")
	}
}

// writeBundleKeys writes a fresh RSA-2048 bundle signing key (PKCS#8) and its public key (PKIX) into dir.
func writeBundleKeys(dir string) (private []byte, publicFile string, err error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", fmt.Errorf("generating the bundle signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, "", err
	}
	private = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, devBundleKeyFile), private, 0o600); err != nil {
		return nil, "", fmt.Errorf("writing the bundle signing key: %w", err)
	}
	publicFile = filepath.Join(dir, devBundleVerifyFile)
	if err := os.WriteFile(publicFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return nil, "", fmt.Errorf("writing the bundle verification key: %w", err)
	}
	return private, publicFile, nil
}

// writeBundleToken writes a random bearer token for the bundle server into dir.
func writeBundleToken(dir string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	path := filepath.Join(dir, devBundleTokenFile)
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the bundle token: %w", err)
	}
	return path, nil
}

type devInfo struct {
	dir                                string
	kept                               bool
	bundleURL, revision                string
	grpcAddr, httpAddr                 string
	bundleKey, verifyKey, jwtKey, jwks string
	pki                                tlsconfig.DevFiles
	bundleToken                        string
}

// devCheckRequest is the CheckRequest Envoy sends for the identity API route (service "identity").
func devCheckRequest(method, path, token string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "api.local", Scheme: "http",
			Headers: map[string]string{"authorization": "Bearer " + token},
		}},
		ContextExtensions: map[string]string{"service": "identity"},
	}}
}

// selfCommand is how the printed examples call this binary: as it was started (bin/keygate from make run,
// keygate from PATH), or through go run from a go run / go test build.
func selfCommand() string {
	arg0 := os.Args[0]
	switch {
	case strings.Contains(arg0, "go-build") || strings.HasSuffix(arg0, ".test"):
		return "go run ./cmd/keygate"
	case !strings.ContainsRune(arg0, os.PathSeparator) || !filepath.IsAbs(arg0):
		return arg0
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, arg0); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return arg0
}

func printDevExamples(w io.Writer, d devInfo, key jwk.Key, ttl time.Duration) error {
	alice, err := identity.Mint(key, identity.TokenSpec{User: "u-alice", ID: "tok-alice", TTL: ttl})
	if err != nil {
		return err
	}
	bob, err := identity.Mint(key, identity.TokenSpec{User: "u-bob", TTL: ttl})
	if err != nil {
		return err
	}
	grpcurl := func(req *authv3.CheckRequest) (string, error) {
		b, err := protojson.Marshal(req)
		if err != nil {
			return "", err
		}
		var compact json.RawMessage = b // protojson's spacing is unstable; re-encode compactly
		out, err := json.Marshal(compact)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("go tool grpcurl -plaintext -d '%s' %s envoy.service.auth.v3.Authorization/Check", out, d.grpcAddr), nil
	}
	allowed, err := grpcurl(devCheckRequest("GET", "/api/identity/orgs/org-layer5/teams", alice))
	if err != nil {
		return err
	}
	denied, err := grpcurl(devCheckRequest("DELETE", "/api/identity/orgs/org-layer5", bob))
	if err != nil {
		return err
	}
	input := `{"input": {"user": "u-bob", "org": "org-layer5", "key": "Delete Organization", "resource": {"type": "organization", "id": "org-layer5"}}}`
	removed := " (removed on exit; --dir keeps them)"
	if d.kept {
		removed = ""
	}
	_, err = fmt.Fprintf(w, `keygate dev is ready: the embedded demo, served signed and verified, over TLS.

  bundle server   %s  (revision %s; TLS, bearer token or client certificate)
  sidecar gRPC    %s  (envoy.service.auth.v3.Authorization/Check; plaintext on loopback for envoy/sidecar.yaml)
  sidecar HTTP    https://%s  (/v1/data decision entrypoints, /health?bundles, /metrics)
  keys in %s%s:
    bundle signing key       %s
    bundle verification key  %s
    JWT signing key          %s
    JWKS                     %s
    dev CA                   %s
    server certificate       %s (key %s)
    client certificate       %s (key %s)
    bundle server token      %s

# (grpcurl is pinned in go.mod: run these from the keygate checkout, or use a grpcurl of your own)
# u-alice (Organization Admin, owner of org-layer5) lists the org's teams: allowed
%s

# u-bob (Organization Admin of org-layer5, not its owner) deletes the org: denied (owner_required)
%s

# the same question through OPA's data API (over TLS: trust the dev CA)
curl -s --cacert %s https://%s/v1/data/keygate/authz/decision -d '%s'

# raw data is not served (403; keygate authz --data-api-raw opens it)
curl -s --cacert %s https://%s/v1/data/keygate/db/tokens

# the bundle server answers the token (or the client certificate), and 401 to anyone else
curl -s --cacert %s -H "Authorization: Bearer $(cat %s)" -o bundle.tar.gz %s
curl -s --cacert %s --cert %s --key %s -o bundle.tar.gz %s
curl -s --cacert %s %s

# mint more tokens (users and token ids in bundles/demo.yaml)
%s token --user u-heidi --jti tok-heidi --key %s

Ctrl-C stops.
`, d.bundleURL, d.revision, d.grpcAddr, d.httpAddr, d.dir, removed, d.bundleKey, d.verifyKey, d.jwtKey, d.jwks,
		d.pki.CA, d.pki.ServerCert, d.pki.ServerKey, d.pki.ClientCert, d.pki.ClientKey, d.bundleToken,
		allowed, denied,
		d.pki.CA, d.httpAddr, input,
		d.pki.CA, d.httpAddr,
		d.pki.CA, d.bundleToken, d.bundleURL,
		d.pki.CA, d.pki.ClientCert, d.pki.ClientKey, d.bundleURL,
		d.pki.CA, d.bundleURL,
		selfCommand(), d.jwtKey)
	return err
}
