package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { register("version", newVersionCommand) }

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the sysext version",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(c.OutOrStdout(), "sysext %s\n", version)
			return err
		},
	}
}
