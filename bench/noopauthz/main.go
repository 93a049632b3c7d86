// Command noopauthz is a no-op Envoy ext_authz server (always OK, with reflection): the floor a load
// generator sets on this machine, run beside keygate authz in bench/ghz.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

type noop struct {
	authv3.UnimplementedAuthorizationServer
}

func (noop) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{
		OkResponse: &authv3.OkHttpResponse{}}}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9292", "listen address")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noopauthz:", err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, noop{})
	reflection.Register(s)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); s.GracefulStop() }()
	if err := s.Serve(l); err != nil {
		fmt.Fprintln(os.Stderr, "noopauthz:", err)
		os.Exit(1)
	}
}
