package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestRegisteredNames: each command is registered under its own name, the
// key run uses to build that command alone.
func TestRegisteredNames(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range commandConstructors {
		if got := c.new().Name(); got != c.name {
			t.Errorf("registered as %q, the command is named %q", c.name, got)
		}
		if seen[c.name] {
			t.Errorf("%q registered twice", c.name)
		}
		seen[c.name] = true
	}
}

// TestRootForOneCommand: run builds only the command its args name; what
// each command and subcommand prints for --help and for a bad flag is the
// same as from the whole tree.
func TestRootForOneCommand(t *testing.T) {
	if n := len(newRootFor([]string{"fetch", "--help"}).Commands()); n > 2 { // fetch, completion
		t.Errorf("the tree for 'sysext fetch' has %d commands", n)
	}
	run := func(root *cobra.Command, args []string) (string, string) {
		var out, errb bytes.Buffer
		root.SetArgs(args)
		root.SetOut(&out)
		root.SetErr(&errb)
		if _, err := root.ExecuteContextC(context.Background()); err != nil {
			errb.WriteString(err.Error())
		}
		return out.String(), errb.String()
	}
	full := func(args ...string) (string, string) { return run(newRootCommand(), args) }
	one := func(args ...string) (string, string) { return run(newRootFor(args), args) }
	paths := commandPaths(newRootCommand(), "")
	if len(paths) < 30 {
		t.Fatalf("only %d commands: the tree is not what it was", len(paths))
	}
	for _, p := range paths {
		for _, extra := range [][]string{{"--help"}, {"--no-such-flag"}} {
			args := append(strings.Fields(p), extra...)
			wantOut, wantErr := full(args...)
			gotOut, gotErr := one(args...)
			if gotOut != wantOut || gotErr != wantErr {
				t.Errorf("sysext %s: alone it prints\n%s%s\nin the whole tree\n%s%s", strings.Join(args, " "), gotOut, gotErr, wantOut, wantErr)
			}
		}
	}
	// Anything else gets the whole tree.
	if got, want := len(newRootFor([]string{"fetc"}).Commands()), len(newRootCommand().Commands()); got != want {
		t.Errorf("the tree for a typo has %d commands, the whole tree %d", got, want)
	}
}
