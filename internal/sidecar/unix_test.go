package sidecar

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestUnixSocket serves ext_authz and health on a unix socket, as a sidecar sharing a volume with Envoy would.
func TestUnixSocket(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "kg") // short: unix socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "authz.sock")
	b := build(t, demoModel(t, nil), nil)
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := writeFile(path, b.Data); err != nil {
		t.Fatal(err)
	}
	dev := newDevIdentity(t)
	s := startSidecar(t, Config{GRPCAddr: "unix://" + sock, Bundle: BundleConfig{File: path}, Identity: identityFile(dev)})
	waitFor(t, "the bundle", s.Ready)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over the socket: %v %v", h, err)
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkReq("GET", "/api/identity/orgs/org-layer5/teams", "identity",
		map[string]string{"authorization": "Bearer " + dev.token(t, "u-alice", "", time.Hour)}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil {
		t.Fatalf("not allowed over the socket: %v", resp)
	}
}
