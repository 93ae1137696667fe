package main

import (
	"encoding/json"
	"errors"
	"io"

	"github.com/spf13/cobra"
)

// argsUsage wraps a cobra positional-argument check so a wrong count exits 2.
// Wrapping twice (finishCommands wraps every command's check) changes
// nothing.
func argsUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		err := check(c, args)
		var ee *exitError
		if err == nil || errors.As(err, &ee) {
			return err
		}
		return usageError("%v (see '%s --help')", err, c.CommandPath())
	}
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
