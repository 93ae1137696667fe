package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes shared by every command; a command that has more lists them in
// its help.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// exitError carries a command's exit code next to its error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExit attaches an exit code to err (nil stays nil).
func withExit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code, err}
}

// usageError marks bad flags or arguments (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

// commandConstructors is filled by each command file's init, so adding a
// command touches only its own file.
var commandConstructors []func() *cobra.Command

func register(f func() *cobra.Command) { commandConstructors = append(commandConstructors, f) }

const exitStatusHelp = `
Exit status: 0 on success, 1 on failure, 2 on a usage error; commands that
use others list them in their own help.`

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "sysext",
		Short: "Build, sign, distribute and activate systemd-sysext images as OCI artifacts",
		Long: `sysext builds systemd system extension images (squashfs or EROFS) from a
directory tree, reads their metadata, and moves them through OCI registries
and OCI layouts to the nodes that merge them with systemd-sysext.` + exitStatusHelp,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{exitUsage, fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	for _, f := range commandConstructors {
		root.AddCommand(f())
	}
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string) int {
	root := newRootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	printf(os.Stderr, "sysext: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isCobraUsage(err) {
		return exitUsage
	}
	return exitFailure
}
