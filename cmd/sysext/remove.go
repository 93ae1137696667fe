package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"
)

func init() { register("remove", newRemoveCommand) }

type removeOptions struct{ nodeFlags }

func newRemoveCommand() *cobra.Command {
	var opts removeOptions
	c := &cobra.Command{
		Use:   "remove NAME",
		Short: "Deactivate an extension and delete its stored versions",
		Long: `Remove NAME's activation link, refresh systemd-sysext (not with --root or
--no-refresh), and delete its stored versions and its record. Only what sysext
installed is removed; an image a person put in an extensions directory is
never touched.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runRemove(c.Context(), c, opts, args[0])
		},
	}
	opts.nodeFlags.addFlags(c, true, false)
	return c
}

func runRemove(ctx context.Context, c *cobra.Command, opts removeOptions, name string) error {
	if err := extension.ValidateName(name); err != nil {
		return err
	}
	n, err := opts.node(c, false)
	if err != nil {
		return err
	}
	r, err := n.Remove(ctx, name)
	return opts.finishResult(c, r, err, !opts.Quiet)
}
