// Command keygate compiles Layer5-style RBAC data into signed OPA bundles, serves them, and answers Envoy
// ext_authz checks as a sidecar. See the README for the subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
