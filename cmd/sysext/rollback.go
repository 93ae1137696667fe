package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
)

func init() { register("rollback", newRollbackCommand) }

type rollbackOptions struct{ nodeFlags }

func newRollbackCommand() *cobra.Command {
	var opts rollbackOptions
	c := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Switch an extension back to its previous stored version",
		Long: `Switch NAME's activation link back to the previous stored version (the one
the last pull or update replaced), atomically, and refresh systemd-sysext (not
with --root or --no-refresh). A second rollback goes forward again.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runRollback(c.Context(), c, opts, args[0])
		},
	}
	opts.nodeFlags.addFlags(c, true, false)
	return c
}

func runRollback(ctx context.Context, c *cobra.Command, opts rollbackOptions, name string) error {
	if err := extension.ValidateName(name); err != nil {
		return err
	}
	n, err := opts.node(c, false)
	if err != nil {
		return err
	}
	r, err := n.Rollback(ctx, name)
	return opts.finishResult(c, r, err, !opts.Quiet)
}
