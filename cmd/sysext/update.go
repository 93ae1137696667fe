package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sysext/sysext/extension"

	"github.com/sysext/sysext/node"
)

func init() { register("update", newUpdateCommand) }

// updateExitDoc says what update's and sync's exit codes mean for them.
const updateExitDoc = `Exits 0 when at least one extension changed (or would, with --dry-run),
1 when one failed (the others were still tried), 3 when there was nothing
to do.`

type updateOptions struct {
	nodeFlags
	All    bool
	DryRun bool
}

func newUpdateCommand() *cobra.Command {
	var opts updateOptions
	c := &cobra.Command{
		Use:   "update [NAME...|--all] [--dry-run]",
		Short: "Pull newer builds of installed extensions",
		Long: `Re-resolve each installed extension's source. When the tag did not move this
costs one manifest request per extension; a moved tag is verified, checked
and pulled as 'sysext pull' does, and the version it replaces is kept for
'sysext rollback'. Extensions keep the trust policy they were pulled with.

` + updateExitDoc,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 && !opts.All {
				return usageError("name the extensions to update, or use --all (see '%s --help')", c.CommandPath())
			}
			if len(args) > 0 && opts.All {
				return usageError("give names or --all, not both")
			}
			return runUpdate(c.Context(), c, opts, args)
		},
	}
	opts.nodeFlags.addFlags(c, true, true)
	c.Flags().BoolVar(&opts.All, "all", false, "update every installed extension")
	c.Flags().BoolVar(&opts.DryRun, "dry-run", false, "only say what would be updated")
	return c
}

func runUpdate(ctx context.Context, c *cobra.Command, opts updateOptions, args []string) error {
	for _, name := range args {
		if err := extension.ValidateName(name); err != nil {
			return err
		}
	}
	n, err := opts.node(c, false)
	if err != nil {
		return err
	}
	rs, err := n.Update(ctx, node.UpdateOptions{Names: args, All: opts.All, DryRun: opts.DryRun})
	return opts.finishResults(c, rs, err, "no extension is installed")
}
