package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keygate/keygate/internal/tlsconfig"
)

// syncBuffer is a bytes.Buffer safe for one writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	grpcurlLine     = regexp.MustCompile(`(?m)^go tool grpcurl -plaintext -d '([^']+)' (\S+) envoy\.service\.auth\.v3\.Authorization/Check$`)
	tokenLine       = regexp.MustCompile(`(?m)^go run \./cmd/keygate (token --user \S+ --jti \S+ --key \S+)$`)
	curlLine        = regexp.MustCompile(`(?m)^curl -s --cacert (\S+) (\S+) -d '([^']+)'$`)
	rawLine         = regexp.MustCompile(`(?m)^curl -s --cacert (\S+) (\S+/v1/data/keygate/db/tokens)$`)
	bundleTokenLine = regexp.MustCompile(`(?m)^curl -s --cacert (\S+) -H "Authorization: Bearer \$\(cat (\S+)\)" -o bundle\.tar\.gz (\S+)$`)
	certLine        = regexp.MustCompile(`(?m)^curl -s --cacert (\S+) --cert (\S+) --key (\S+) -o bundle\.tar\.gz (\S+)$`)
	anonLine        = regexp.MustCompile(`(?m)^curl -s --cacert (\S+) (https://\S+/bundles/keygate\.tar\.gz)$`)
)

// curlTLS is the client of `curl --cacert CA [--cert C --key K]`.
func curlTLS(t *testing.T, ca, cert, key string) *http.Client {
	t.Helper()
	cfg, err := tlsconfig.Client(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

// fetch sends one request and returns its status and body.
func fetch(t *testing.T, c *http.Client, method, url, auth, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// TestDevServesThePrintedExamples runs `keygate dev` on free ports, sends the printed grpcurl examples
// (one allowed, one denied) over real gRPC and the curl example over HTTP, then stops it.
func TestDevServesThePrintedExamples(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"},
			&stdout, &stderr)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stdout.String(), "Ctrl-C stops.") {
		select {
		case code := <-done:
			t.Fatalf("keygate dev exited %d before ready; stderr:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("keygate dev not ready after 60s; stderr:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := stdout.String()
	examples := grpcurlLine.FindAllStringSubmatch(out, -1)
	if len(examples) != 2 {
		t.Fatalf("want 2 grpcurl examples in:\n%s", out)
	}
	conn, err := grpc.NewClient(examples[0][2], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for i, want := range []struct {
		code   codes.Code
		reason string
	}{{codes.OK, ""}, {codes.PermissionDenied, "owner_required"}} {
		var req authv3.CheckRequest
		if err := protojson.Unmarshal([]byte(examples[i][1]), &req); err != nil {
			t.Fatalf("example %d is not a CheckRequest: %v", i, err)
		}
		resp, err := client.Check(ctx, &req)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if got := codes.Code(resp.GetStatus().GetCode()); got != want.code {
			t.Errorf("example %d: status %s, want %s (%v)", i, got, want.code, resp)
		}
		if want.reason != "" && !strings.Contains(resp.GetDeniedResponse().GetBody(), want.reason) {
			t.Errorf("example %d: denial body %q does not name %s", i, resp.GetDeniedResponse().GetBody(), want.reason)
		}
	}

	curl := curlLine.FindStringSubmatch(out)
	if curl == nil {
		t.Fatalf("no curl example in:\n%s", out)
	}
	if !strings.HasPrefix(curl[2], "https://") {
		t.Fatalf("the data API example is not over TLS: %s", curl[0])
	}
	_, body := fetch(t, curlTLS(t, curl[1], "", ""), http.MethodPost, curl[2], "", curl[3])
	var decision struct {
		Result struct {
			Allow   bool     `json:"allow"`
			Reasons []string `json:"reasons"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &decision); err != nil || decision.Result.Allow || len(decision.Result.Reasons) == 0 {
		t.Errorf("curl example answered %s, want a denial with reasons", body)
	}

	// The printed token command (go run ./cmd/keygate under go test; bin/keygate from make run) mints a token.
	tok := tokenLine.FindStringSubmatch(out)
	if tok == nil {
		t.Fatalf("no token example in:\n%s", out)
	}
	var tokOut, tokErr bytes.Buffer
	if code := run(ctx, strings.Fields(tok[1]), &tokOut, &tokErr); code != 0 || strings.Count(tokOut.String(), ".") != 2 {
		t.Errorf("keygate %s: exit %d, %q %s", tok[1], code, tokOut.String(), tokErr.String())
	}

	// The secure setup's examples: raw data refused, the bundle only with the token or the client certificate.
	raw := rawLine.FindStringSubmatch(out)
	btok := bundleTokenLine.FindStringSubmatch(out)
	cert := certLine.FindStringSubmatch(out)
	anon := anonLine.FindStringSubmatch(out)
	if raw == nil || btok == nil || cert == nil || anon == nil {
		t.Fatalf("missing raw-data / bundle curl examples in:\n%s", out)
	}
	if code, body := fetch(t, curlTLS(t, raw[1], "", ""), http.MethodGet, raw[2], "", ""); code != http.StatusForbidden ||
		strings.Contains(string(body), "tok-alice") {
		t.Errorf("raw data example: %d %.200s, want 403", code, body)
	}
	token, err := os.ReadFile(btok[2])
	if err != nil {
		t.Fatal(err)
	}
	if code, body := fetch(t, curlTLS(t, btok[1], "", ""), http.MethodGet, btok[3], "Bearer "+strings.TrimSpace(string(token)), ""); code != http.StatusOK || len(body) < 1000 {
		t.Errorf("bundle with the token: %d, %d bytes", code, len(body))
	}
	if code, body := fetch(t, curlTLS(t, cert[1], cert[2], cert[3]), http.MethodGet, cert[4], "", ""); code != http.StatusOK || len(body) < 1000 {
		t.Errorf("bundle with the client certificate: %d, %d bytes", code, len(body))
	}
	if code, body := fetch(t, curlTLS(t, anon[1], "", ""), http.MethodGet, anon[2], "", ""); code != http.StatusUnauthorized {
		t.Errorf("bundle without credentials: %d, %d bytes, want 401", code, len(body))
	}

	cancel()
	select {
	case code := <-done:
		if strings.Contains(stderr.String(), "connection refused") {
			t.Errorf("stopping logged connection errors (the sidecar must stop before the bundle server):\n%s", stderr.String())
		}
		if code != 0 {
			t.Fatalf("keygate dev exited %d after cancel; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("keygate dev did not stop within 20s of cancel")
	}
}
