package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit code (2 = usage / bad input, 1 = failure).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// env is what every subcommand gets from run: streams and a logger. No globals.
type env struct {
	stdout, stderr io.Writer
	logger         *slog.Logger
	getenv         func(string) string
}

// run executes the keygate command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{
		stdout: stdout,
		stderr: stderr,
		logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
		getenv: os.Getenv,
	}
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "keygate:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "keygate",
		Short:         "Layer5-style RBAC compiled to OPA bundles, served to Envoy ext_authz sidecars",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	for _, sub := range subcommands {
		root.AddCommand(sub(e))
	}
	return root
}

// subcommands lists the constructors of keygate's subcommands; each subcommand's file adds itself in init.
var subcommands []func(*env) *cobra.Command

func register(c func(*env) *cobra.Command) { subcommands = append(subcommands, c) }

func init() {
	register(func(e *env) *cobra.Command {
		return &cobra.Command{
			Use:   "version",
			Short: "Print keygate's version",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				_, err := fmt.Fprintf(e.stdout, "keygate %s\n", version)
				return err
			},
		}
	})
}

// usageErr marks bad input (exit code 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}
