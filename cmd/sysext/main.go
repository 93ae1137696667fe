package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// commandConstructors is filled by each command file's init, so adding a
// command touches only its own file; the key is the command's name.
var commandConstructors []namedConstructor

type namedConstructor struct {
	name string
	new  func() *cobra.Command
}

func register(name string, f func() *cobra.Command) {
	commandConstructors = append(commandConstructors, namedConstructor{name, f})
}

// newRootCommand builds the whole command tree.
func newRootCommand() *cobra.Command { return newRootFor(nil) }

// newRootFor builds the tree args need: when args start with a command's
// name (`sysext fetch ...`), the root holds that command alone, since the
// others' flags and help (a thousand allocations, about 1 ms at every
// start) serve only to list, complete or suggest commands; any other args
// (help, --version, completion, a typo) get the whole tree.
func newRootFor(args []string) *cobra.Command {
	constructors := commandConstructors
	if len(args) > 0 {
		for _, c := range commandConstructors {
			if c.name == args[0] {
				constructors = []namedConstructor{c}
				break
			}
		}
	}
	root := &cobra.Command{
		Use:   "sysext",
		Short: "Build, sign, distribute and activate systemd-sysext images as OCI artifacts",
		Long: `sysext builds systemd system extension images (squashfs or EROFS) from a
directory tree, reads their metadata, and moves them through OCI registries
and OCI layouts to the nodes that merge them with systemd-sysext.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{exitUsage, fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	for _, c := range constructors {
		root.AddCommand(c.new())
	}
	// cobra's own completion command, with the value completions the
	// commands register (completion.go).
	root.InitDefaultCompletionCmd()
	finishCommands(root)
	registerCompletions(root)
	return root
}

// finishCommands gives every command of the tree what all of them share:
// the exit status table in its help, and an unknown subcommand as a usage
// error (cobra only prints the help for a group command).
func finishCommands(c *cobra.Command) {
	if c.Long == "" {
		c.Long = c.Short + "."
	}
	c.Long = strings.TrimRight(c.Long, "\n") + "\n\n" + exitStatusHelp
	if c.Args != nil {
		c.Args = argsUsage(c.Args)
	}
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(": did you mean '%s %s'?", c.CommandPath(), s[0])
			}
			return usageError("%s (see '%s --help')", msg, c.CommandPath())
		}
	}
	for _, sub := range c.Commands() {
		finishCommands(sub)
	}
}

func main() {
	ctx, stop := interruptible(context.Background())
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// interruptible cancels ctx on SIGINT or SIGTERM, with an *interrupted
// cause that names the signal.
func interruptible(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(&interrupted{sig: s.(syscall.Signal)})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// run executes the command line with the given standard streams and
// returns the process exit code (exitCode maps the error).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootFor(args)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	c, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if in, ok := context.Cause(ctx).(*interrupted); ok {
		in.command = c.CommandPath()
		err = in
	}
	printf(stderr, "sysext: %v\n", err)
	return exitCode(err)
}
